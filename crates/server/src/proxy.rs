//! PROXY protocol v2 behind a load balancer: which peers are trusted to send the header, and
//! reading it (parsed by the `ppp` crate) so that logs, per-source limits and the
//! authentication limiter see the real client.

use std::fmt;
use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use ppp::v2::{Addresses, Command, Header, ParseError};

/// Most bytes a PROXY header may take. The format allows 16 + 65535; an address pair and a
/// few TLVs take well under this, and a bigger header is refused before it is read.
pub(crate) const MAX_HEADER: usize = 512;
/// The fixed part of a v2 header: signature, version and command, family, length.
const FIXED: usize = 16;

/// Why a trusted proxy's connection did not start with a usable PROXY v2 header.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HeaderError {
    /// The proxy closed, went silent past the header timeout, or the read failed.
    #[error("no PROXY protocol v2 header from the trusted proxy: {0}")]
    Read(#[from] io::Error),
    /// The bytes are not a v2 header (a client connecting directly, or a proxy not set up to
    /// send one: HAProxy needs `send-proxy-v2` on its `server` line).
    #[error("malformed PROXY protocol v2 header from the trusted proxy (is it set to send-proxy-v2?): {0}")]
    Malformed(ParseError),
    /// The header announces more bytes than [`MAX_HEADER`].
    #[error("PROXY protocol v2 header of {0} bytes from the trusted proxy, more than the {MAX_HEADER} allowed")]
    TooLong(usize),
}

/// Reads the PROXY v2 header that a trusted proxy sends first, and no byte more (what follows
/// is the client's), within `io`'s deadline. Returns the client's address, or `proxy`'s own
/// for a `LOCAL` header (the proxy's health check) or one without an IP address.
pub(crate) fn read_header(
    io: &mut impl Read,
    proxy: SocketAddr,
) -> Result<SocketAddr, HeaderError> {
    let mut buf = [0u8; MAX_HEADER];
    io.read_exact(&mut buf[..FIXED])?;
    let len = match Header::try_from(&buf[..FIXED]) {
        Ok(_) => FIXED,
        // The fixed part is sound and announces `more` bytes of addresses and TLVs.
        Err(ParseError::Partial(_, more)) => FIXED.saturating_add(more),
        Err(e) => return Err(HeaderError::Malformed(e)),
    };
    let whole = buf.get_mut(..len).ok_or(HeaderError::TooLong(len))?;
    io.read_exact(&mut whole[FIXED..])?;
    let header = Header::try_from(&*whole).map_err(HeaderError::Malformed)?;
    Ok(match (header.command, header.addresses) {
        (Command::Proxy, Addresses::IPv4(a)) => (a.source_address, a.source_port).into(),
        (Command::Proxy, Addresses::IPv6(a)) => (a.source_address, a.source_port).into(),
        _ => proxy,
    })
}

/// Whether `ip` is one of `trusted`.
pub(crate) fn is_trusted(trusted: &[Trusted], ip: IpAddr) -> bool {
    trusted.iter().any(|t| t.contains(ip))
}

/// A trusted proxy: an address, or a network in CIDR form (`10.0.0.0/8`, `fd00::/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trusted {
    net: IpAddr,
    prefix: u8,
}

impl Trusted {
    /// Whether `ip` is in this network (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                masked(n.to_bits().into(), 32, self.prefix)
                    == masked(a.to_bits().into(), 32, self.prefix)
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                masked(n.to_bits(), 128, self.prefix) == masked(a.to_bits(), 128, self.prefix)
            }
            _ => false,
        }
    }
}

/// The top `prefix` bits of a `width`-bit address.
fn masked(bits: u128, width: u8, prefix: u8) -> u128 {
    let drop = u32::from(width - prefix);
    bits.checked_shr(drop).unwrap_or(0)
}

impl FromStr for Trusted {
    type Err = String;

    /// `ADDR` or `ADDR/PREFIX`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?} is not an address or a network (ADDR or ADDR/PREFIX)");
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let net: IpAddr = addr.parse().map_err(|_| bad())?;
        let net = net.to_canonical();
        let width = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= width)
                .ok_or_else(bad)?,
            None => width,
        };
        Ok(Self { net, prefix })
    }
}

impl fmt::Display for Trusted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, rest: &[u8]) -> Vec<u8> {
        let mut h = ppp::v2::PROTOCOL_PREFIX.to_vec();
        h.extend([command, family]);
        h.extend(u16::try_from(rest.len()).unwrap().to_be_bytes());
        h.extend(rest);
        h
    }

    #[test]
    fn headers_give_the_client_address_and_nothing_more_is_read() {
        let proxy: SocketAddr = "10.0.0.1:40000".parse().unwrap();
        let mut ipv4 = v2(
            0x21,
            0x11,
            &[192, 0, 2, 7, 10, 0, 0, 2, 0x9c, 0x40, 0x20, 0xc2],
        );
        ipv4.extend(b"FERRY");
        let mut input = &ipv4[..];
        let got = read_header(&mut input, proxy).unwrap();
        assert_eq!(got, "192.0.2.7:40000".parse().unwrap());
        assert_eq!(input, b"FERRY", "the bytes after the header are left");

        let mut six = vec![0u8; 36];
        six[15] = 1;
        six[32..34].copy_from_slice(&443u16.to_be_bytes());
        let got = read_header(&mut &v2(0x21, 0x21, &six)[..], proxy).unwrap();
        assert_eq!(got, "[::1]:443".parse().unwrap());

        let local = v2(0x20, 0x00, &[]);
        assert_eq!(read_header(&mut &local[..], proxy).unwrap(), proxy);
    }

    #[test]
    fn bad_or_oversized_headers_are_refused() {
        let proxy: SocketAddr = "10.0.0.1:40000".parse().unwrap();
        let direct = b"\x00FERRY-HELLO-and-some-more".to_vec();
        assert!(matches!(
            read_header(&mut &direct[..], proxy),
            Err(HeaderError::Malformed(_))
        ));
        let huge = v2(0x21, 0x11, &[0; 2000]);
        assert!(matches!(
            read_header(&mut &huge[..], proxy),
            Err(HeaderError::TooLong(2016))
        ));
        let short_addresses = v2(0x21, 0x11, &[1, 2, 3]);
        assert!(matches!(
            read_header(&mut &short_addresses[..], proxy),
            Err(HeaderError::Malformed(_))
        ));
        let cut = &v2(0x21, 0x11, &[0; 12])[..20];
        assert!(matches!(
            read_header(&mut &cut[..], proxy),
            Err(HeaderError::Read(_))
        ));
    }

    #[test]
    fn networks_contain_their_addresses() {
        let net: Trusted = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains("10.1.200.3".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.0.1".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        let one: Trusted = "127.0.0.1".parse().unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        let all: Trusted = "::/0".parse().unwrap();
        assert!(all.contains("2001:db8::1".parse().unwrap()));
        for bad in ["10.0.0.0/33", "x", "1.2.3.4/", "::/129"] {
            assert!(bad.parse::<Trusted>().is_err(), "{bad}");
        }
    }
}
