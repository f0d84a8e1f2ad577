//! The S3 backend: files stored as objects of an S3-compatible bucket (`--store s3://…`).

mod client;
mod layout;
