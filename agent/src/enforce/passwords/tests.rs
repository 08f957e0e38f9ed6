//! Tests of the password enforcer.
