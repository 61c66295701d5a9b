//! Endpoint URL validation and SSRF classification: what the forward layer and the registry
//! run on a tenant's endpoint before any delivery.
//!
//! Properties: parsing never panics; a URL the enabled guard accepts never names a refused
//! literal address; an IPv4 address and its IPv4-mapped IPv6 form are classified alike; an
//! allow-listed CIDR admits the addresses it contains.

#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tower_webhooks::delivery::{RefusalKind, SsrfGuard};

#[derive(Arbitrary, Debug)]
struct Input {
    url: String,
    cidr: String,
    v4: [u8; 4],
    v6: [u8; 16],
}

/// The IP literal of a URI host (`[::1]` brackets allowed).
fn literal_ip(host: &str) -> Option<IpAddr> {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
        .parse()
        .ok()
}

/// How the default guard classifies an address: `None` when it is allowed.
fn classify(ip: IpAddr) -> Option<RefusalKind> {
    SsrfGuard::new().check_ip(ip).err().map(|refusal| refusal.kind())
}

fuzz_target!(|input: Input| {
    let guard = SsrfGuard::new();
    if let Ok(uri) = guard.check_url(&input.url) {
        let host = uri.host().expect("an accepted endpoint has a host");
        if let Some(ip) = literal_ip(host) {
            assert_eq!(classify(ip), None, "{:?} was accepted", input.url);
        }
    }
    let _ = SsrfGuard::new().allow_loopback().check_url(&input.url);
    let _ = SsrfGuard::disabled().check_url(&input.url);

    let v4 = Ipv4Addr::from(input.v4);
    let v6 = Ipv6Addr::from(input.v6);
    assert_eq!(
        classify(IpAddr::V4(v4)),
        classify(IpAddr::V6(v4.to_ipv6_mapped())),
        "{v4} and its IPv4-mapped form differ"
    );
    let _ = classify(IpAddr::V6(v6));

    if let Ok(allowing) = SsrfGuard::new().allow_cidr(&input.cidr) {
        for ip in [IpAddr::V4(v4), IpAddr::V6(v6)] {
            let _ = allowing.check_ip(ip);
        }
    }
});
