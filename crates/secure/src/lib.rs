//! TLS and authentication for ferry (being written).
