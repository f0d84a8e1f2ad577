//! Helpers for the fault-injection suite (being written).
