"""Helpers shared by the test modules (servers, harnesses, recording doubles); no tests here."""
