//! Scale-out on a real object store: a single-node Ceph RGW (tests/rgw, scripts/rgw.sh).

mod rgw;

use rgw::Rgw;

/// What the S3 backend's refuse-overwrite rests on: a PutObject with `If-None-Match: *` is
/// refused (412) when the key exists, and the first object stays.
#[test]
fn rgw_refuses_a_conditional_put_over_an_existing_key() {
    let Some(rgw) = Rgw::get() else { return };
    let bucket = rgw.fresh_bucket("if-none-match");
    assert_eq!(rgw.put_if_absent(&bucket, "claim", b"first"), 200);
    assert_eq!(rgw.put_if_absent(&bucket, "claim", b"second"), 412);
    assert_eq!(
        rgw.get_object(&bucket, "claim").as_deref(),
        Some(&b"first"[..])
    );
    assert_eq!(rgw.keys(&bucket, ""), vec![("claim".to_owned(), 5)]);
}
