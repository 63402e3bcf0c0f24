"""The test MariaDB/MySQL server: one connection rule and OpenSIPS's subscriber schema for every test
that needs a real database (node table, subscriber table, end to end).

The server is ``EDGEPROXY_TEST_DB_URL`` (default ``mysql://root@127.0.0.1:3306/test``, what these
machines run). Unreachable, the tests skip with the reason -- except under ``CI=true``, where a
missing database is a failure: CI must not pass by running nothing.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from typing import Any

import pytest

from edgeproxy.sqldb import connect_kwargs, parse_db_url

__all__ = ["DB_URL", "connect", "connect_or_skip", "unique_name", "SUBSCRIBER_SCHEMA", "SUBSCRIBER_INSERT",
           "subscriber_row", "ACC_SCHEMA", "MISSED_CALLS_SCHEMA"]

DB_URL = os.environ.get("EDGEPROXY_TEST_DB_URL", "mysql://root@127.0.0.1:3306/test")

#: OpenSIPS 3.x's subscriber table (the shape of its auth_db creation script).
SUBSCRIBER_SCHEMA = """
CREATE TABLE `{table}` (
    id INT(10) UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL,
    username CHAR(64) DEFAULT '' NOT NULL,
    domain CHAR(64) DEFAULT '' NOT NULL,
    password CHAR(25) DEFAULT '' NOT NULL,
    email_address CHAR(64) DEFAULT NULL,
    ha1 CHAR(64) DEFAULT '' NOT NULL,
    ha1_sha256 CHAR(64) DEFAULT '' NOT NULL,
    ha1_sha512t256 CHAR(64) DEFAULT '' NOT NULL,
    rpid CHAR(255) DEFAULT NULL,
    CONSTRAINT account_idx UNIQUE (username, domain)
) ENGINE=InnoDB
"""
#: OpenSIPS 3.x's acc table (acc-create.sql, table version 7) and missed_calls (version 5).
ACC_SCHEMA = """
CREATE TABLE `{table}` (
    id INT(10) UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL,
    method CHAR(16) DEFAULT '' NOT NULL,
    from_tag CHAR(64) DEFAULT '' NOT NULL,
    to_tag CHAR(64) DEFAULT '' NOT NULL,
    callid CHAR(64) DEFAULT '' NOT NULL,
    sip_code CHAR(3) DEFAULT '' NOT NULL,
    sip_reason CHAR(32) DEFAULT '' NOT NULL,
    time DATETIME NOT NULL,
    duration INT(11) UNSIGNED DEFAULT 0 NOT NULL,
    ms_duration INT(11) UNSIGNED DEFAULT 0 NOT NULL,
    setuptime INT(11) UNSIGNED DEFAULT 0 NOT NULL,
    created DATETIME DEFAULT NULL,
    INDEX callid_idx (callid)
) ENGINE=InnoDB
"""
MISSED_CALLS_SCHEMA = """
CREATE TABLE `{table}` (
    id INT(10) UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL,
    method CHAR(16) DEFAULT '' NOT NULL,
    from_tag CHAR(64) DEFAULT '' NOT NULL,
    to_tag CHAR(64) DEFAULT '' NOT NULL,
    callid CHAR(64) DEFAULT '' NOT NULL,
    sip_code CHAR(3) DEFAULT '' NOT NULL,
    sip_reason CHAR(32) DEFAULT '' NOT NULL,
    time DATETIME NOT NULL,
    setuptime INT(11) UNSIGNED DEFAULT 0 NOT NULL,
    created DATETIME DEFAULT NULL,
    INDEX callid_idx (callid)
) ENGINE=InnoDB
"""
SUBSCRIBER_INSERT = ("INSERT INTO `{table}` (username, domain, password, email_address, ha1, ha1_sha256, "
                     "ha1_sha512t256, rpid) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)")


def subscriber_row(user: str, domain: str, password: str, *, all_ha1: bool = True, email: str | None = None,
                   rpid: str | None = None) -> tuple:
    """A row as OpenSIPS's ``opensips-cli user add`` writes it: the password and its HA1s over
    ``user:domain:password`` (``all_ha1=False``: MD5 only, like a pre-3.x table)."""
    a1 = f"{user}:{domain}:{password}".encode()
    return (user, domain, password, email, hashlib.md5(a1).hexdigest(),
            hashlib.sha256(a1).hexdigest() if all_ha1 else "",
            hashlib.new("sha512_256", a1).hexdigest() if all_ha1 else "", rpid)


def connect() -> tuple[Any, str | None]:
    """(connection, None), or (None, why not)."""
    try:
        import pymysql
    except ImportError as exc:
        return None, f"PyMySQL not installed ({exc})"
    db = parse_db_url(DB_URL)
    try:
        return pymysql.connect(**connect_kwargs(db, 3.0), autocommit=True), None
    except pymysql.MySQLError as exc:
        return None, f"MariaDB/MySQL unreachable at {db.host}:{db.port}/{db.database}: {exc}"


def connect_or_skip() -> Any:
    conn, why = connect()
    if conn is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and the test database is required: {why}")
        pytest.skip(why)
    return conn


def unique_name(prefix: str) -> str:
    return f"{prefix}_t{uuid.uuid4().hex[:12]}"
