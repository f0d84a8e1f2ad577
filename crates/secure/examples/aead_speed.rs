//! The cost of TLS' cryptography alone, for bench/run.sh: seals and opens MIB MiB (default
//! 1024) in 16 KiB records, in place, with ring's AES-128-GCM (the suite ferry's TLS
//! prefers) on one core, and prints the CPU seconds of each (from `/proc/self/stat`, so
//! other load on the machine does not count).
//!
//! ```text
//! cargo run --release -p ferry-secure --example aead_speed -- 1024
//! ```

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM};

/// Plaintext bytes per record, as in TLS.
const RECORD: usize = 16 * 1024;
/// Clock ticks per second of `/proc/self/stat` (USER_HZ, 100 on Linux).
const TICKS: f64 = 100.0;

fn main() {
    let mib: usize = match std::env::args().nth(1).map(|a| a.parse()) {
        None => 1024,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("usage: aead_speed [MIB]");
            std::process::exit(2);
        }
    };
    let key = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &[7; 16]).expect("a 16-byte key"));
    let mut buf = vec![0x5a_u8; 1 << 20];
    let records = mib * (buf.len() / RECORD);
    // Sealing alone, then sealing and opening each record: the difference is the opening.
    let seal = cpu_seconds_of(|| run(&key, &mut buf, records, false));
    let both = cpu_seconds_of(|| run(&key, &mut buf, records, true));
    let open = (both - seal).max(0.0);
    println!("{mib} MiB AES-128-GCM, one core: seal {seal:.2} s, open {open:.2} s (CPU)");
}

/// Seals `records` records in place (and opens each again if `open`).
fn run(key: &LessSafeKey, buf: &mut [u8], records: usize, open: bool) {
    for i in 0..records {
        let at = (i * RECORD) % buf.len();
        let record = &mut buf[at..at + RECORD];
        let nonce = || {
            let mut n = [0u8; 12];
            n[4..].copy_from_slice(&(i as u64).to_be_bytes());
            Nonce::assume_unique_for_key(n)
        };
        let tag = key
            .seal_in_place_separate_tag(nonce(), Aad::empty(), record)
            .expect("sealing cannot fail here");
        if open {
            key.open_in_place_separate_tag(nonce(), Aad::empty(), tag, record, 0..)
                .expect("a record just sealed opens");
        }
    }
}

/// CPU seconds `f` took.
fn cpu_seconds_of(f: impl FnOnce()) -> f64 {
    let start = cpu_seconds();
    f();
    cpu_seconds() - start
}

/// CPU seconds this process has used (user + system).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) end with ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    (ticks(11) + ticks(12)) / TICKS
}
