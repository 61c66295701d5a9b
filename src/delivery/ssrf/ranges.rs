//! Which addresses are refused: the IANA special-purpose registries (IPv4 and IPv6) minus the
//! entries marked globally reachable, plus every IPv6 address outside global unicast
//! (`2000::/3`). IPv6 forms that carry an IPv4 address are decoded and judged as that address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

use super::RefusalKind;

const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), prefix)
}

const fn v6(segments: [u16; 8], prefix: u16) -> Ipv6Net {
    let [a, b, c, d, e, f, g, h] = segments;
    // The prefix length always fits a u8 (at most 128).
    Ipv6Net::new_assert(Ipv6Addr::new(a, b, c, d, e, f, g, h), prefix as u8)
}

/// The refused IPv4 ranges, most specific first where they overlap.
pub(super) const REFUSED_V4: &[(Ipv4Net, RefusalKind)] = &[
    (v4(255, 255, 255, 255, 32), RefusalKind::Broadcast),
    (v4(0, 0, 0, 0, 8), RefusalKind::Unspecified),
    (v4(10, 0, 0, 0, 8), RefusalKind::Private),
    (v4(100, 64, 0, 0, 10), RefusalKind::SharedAddress),
    (v4(127, 0, 0, 0, 8), RefusalKind::Loopback),
    (v4(169, 254, 0, 0, 16), RefusalKind::LinkLocal),
    (v4(172, 16, 0, 0, 12), RefusalKind::Private),
    // IETF protocol assignments, DS-Lite, and the deprecated 6to4 relay anycast.
    (v4(192, 0, 0, 0, 24), RefusalKind::Reserved),
    (v4(192, 0, 2, 0, 24), RefusalKind::Documentation),
    (v4(192, 88, 99, 0, 24), RefusalKind::Reserved),
    (v4(192, 168, 0, 0, 16), RefusalKind::Private),
    (v4(198, 18, 0, 0, 15), RefusalKind::Documentation),
    (v4(198, 51, 100, 0, 24), RefusalKind::Documentation),
    (v4(203, 0, 113, 0, 24), RefusalKind::Documentation),
    (v4(224, 0, 0, 0, 4), RefusalKind::Multicast),
    (v4(240, 0, 0, 0, 4), RefusalKind::Reserved),
];

/// Globally reachable entries inside [`IETF_ASSIGNMENTS_V6`] (anycast services, ORCHIDv2).
const REACHABLE_V6: &[Ipv6Net] = &[
    v6([0x2001, 1, 0, 0, 0, 0, 0, 1], 128),
    v6([0x2001, 1, 0, 0, 0, 0, 0, 2], 128),
    v6([0x2001, 1, 0, 0, 0, 0, 0, 3], 128),
    v6([0x2001, 3, 0, 0, 0, 0, 0, 0], 32),
    v6([0x2001, 4, 0x112, 0, 0, 0, 0, 0], 48),
    v6([0x2001, 0x20, 0, 0, 0, 0, 0, 0], 28),
    v6([0x2001, 0x30, 0, 0, 0, 0, 0, 0], 28),
];

const IETF_ASSIGNMENTS_V6: Ipv6Net = v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 23);
const GLOBAL_UNICAST_V6: Ipv6Net = v6([0x2000, 0, 0, 0, 0, 0, 0, 0], 3);

/// The refused IPv6 ranges that carry no IPv4 address, most specific first.
pub(super) const REFUSED_V6: &[(Ipv6Net, RefusalKind)] = &[
    (v6([0, 0, 0, 0, 0, 0, 0, 1], 128), RefusalKind::Loopback),
    (v6([0, 0, 0, 0, 0, 0, 0, 0], 128), RefusalKind::Unspecified),
    (v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8), RefusalKind::Multicast),
    (
        v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10),
        RefusalKind::LinkLocal,
    ),
    (
        v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10),
        RefusalKind::UniqueLocal,
    ),
    (
        v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),
        RefusalKind::UniqueLocal,
    ),
    (
        v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32),
        RefusalKind::Documentation,
    ),
    (
        v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20),
        RefusalKind::Documentation,
    ),
    (
        v6([0x2001, 2, 0, 0, 0, 0, 0, 0], 48),
        RefusalKind::Documentation,
    ),
    // Discard-only and dummy prefixes.
    (v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64), RefusalKind::Reserved),
    (v6([0x100, 0, 0, 1, 0, 0, 0, 0], 64), RefusalKind::Reserved),
    // Local-use NAT64 (RFC 8215): the prefix routes to the operator's own translator, so it is
    // refused whatever IPv4 address it carries.
    (
        v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48),
        RefusalKind::Reserved,
    ),
    // Segment-routing SIDs.
    (v6([0x5f00, 0, 0, 0, 0, 0, 0, 0], 16), RefusalKind::Reserved),
];

/// The IPv6 forms that carry an IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Embedding {
    /// `::ffff:a.b.c.d` (IPv4-mapped).
    Mapped,
    /// `::a.b.c.d` (IPv4-compatible, deprecated).
    Compatible,
    /// `::ffff:0:a.b.c.d` (IPv4-translated, SIIT).
    Translated,
    /// `64:ff9b::a.b.c.d` (well-known NAT64).
    Nat64,
    /// `2002:aabb:ccdd::/48` (6to4).
    SixToFour,
    /// `2001:0:<server>:<flags>:<port>:<client, inverted>` (Teredo): both IPv4 addresses.
    Teredo,
}

impl Embedding {
    pub(super) const ALL: [Self; 6] = [
        Self::Mapped,
        Self::Compatible,
        Self::Translated,
        Self::Nat64,
        Self::SixToFour,
        Self::Teredo,
    ];

    /// The network whose addresses take this form.
    const fn network(self) -> Ipv6Net {
        match self {
            Self::Mapped => v6([0, 0, 0, 0, 0, 0xffff, 0, 0], 96),
            Self::Compatible => v6([0, 0, 0, 0, 0, 0, 0, 0], 96),
            Self::Translated => v6([0, 0, 0, 0, 0xffff, 0, 0, 0], 96),
            Self::Nat64 => v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96),
            Self::SixToFour => v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16),
            Self::Teredo => v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32),
        }
    }

    /// The IPv4 addresses `ip` carries in this form (Teredo carries two).
    fn decode(self, ip: Ipv6Addr) -> [Ipv4Addr; 2] {
        let bits = ip.to_bits();
        let low = Ipv4Addr::from_bits(bits as u32);
        match self {
            Self::Mapped | Self::Compatible | Self::Translated | Self::Nat64 => [low, low],
            Self::SixToFour => {
                let carried = Ipv4Addr::from_bits((bits >> 80) as u32);
                [carried, carried]
            }
            Self::Teredo => [Ipv4Addr::from_bits((bits >> 64) as u32), !low],
        }
    }

    /// `a` in this form (for Teredo, as both server and client): the inverse of `decode`.
    #[cfg(test)]
    pub(super) fn encode(self, a: Ipv4Addr) -> Ipv6Addr {
        let base = self.network().network().to_bits();
        let a = u128::from(a.to_bits());
        Ipv6Addr::from_bits(match self {
            Self::Mapped | Self::Compatible | Self::Translated | Self::Nat64 => base | a,
            Self::SixToFour => base | (a << 80),
            Self::Teredo => base | (a << 64) | u128::from(!(a as u32)),
        })
    }
}

/// The refused class of an address, or `None` for a globally reachable one.
pub(crate) fn classify(ip: IpAddr) -> Option<RefusalKind> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

pub(super) fn classify_v4(ip: Ipv4Addr) -> Option<RefusalKind> {
    REFUSED_V4
        .iter()
        .find(|(net, _)| net.contains(&ip))
        .map(|&(_, kind)| kind)
}

fn classify_v6(ip: Ipv6Addr) -> Option<RefusalKind> {
    // `::` and `::1` sit inside the IPv4-compatible form; they are themselves, not 0.0.0.x.
    if let Some(&(_, kind)) = REFUSED_V6.iter().find(|(net, _)| net.contains(&ip)) {
        return Some(kind);
    }
    if let Some(form) = Embedding::ALL
        .into_iter()
        .find(|form| form.network().contains(&ip))
    {
        return form.decode(ip).into_iter().find_map(classify_v4);
    }
    if IETF_ASSIGNMENTS_V6.contains(&ip) && !REACHABLE_V6.iter().any(|net| net.contains(&ip)) {
        return Some(RefusalKind::Reserved);
    }
    if !GLOBAL_UNICAST_V6.contains(&ip) {
        return Some(RefusalKind::Reserved);
    }
    None
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn kind(ip: &str) -> Option<RefusalKind> {
        classify(ip.parse().unwrap())
    }

    #[test]
    fn ipv6_forms_that_carry_an_ipv4_address_are_judged_by_it() {
        for (ip, expected) in [
            // IPv4-translated (SIIT).
            ("::ffff:0:127.0.0.1", RefusalKind::Loopback),
            ("::ffff:0:a9fe:a9fe", RefusalKind::LinkLocal),
            // Teredo: the client address is stored inverted (here 10.0.0.1), the server as is.
            ("2001:0:5ef5:79fb:0:0:f5ff:fffe", RefusalKind::Private),
            ("2001:0:7f00:1:0:0:f7f7:f7f7", RefusalKind::Loopback),
            ("64:ff9b::169.254.169.254", RefusalKind::LinkLocal),
            ("2002:7f00:1::", RefusalKind::Loopback),
            // Local-use NAT64 is refused whatever it carries.
            ("64:ff9b:1::8.8.8.8", RefusalKind::Reserved),
            ("64:ff9b:1:ffff::1", RefusalKind::Reserved),
        ] {
            assert_eq!(kind(ip), Some(expected), "{ip}");
        }
        for ip in [
            "::ffff:0:8.8.8.8",
            "64:ff9b::8.8.8.8",
            "2002:808:808::1",
            // Teredo with public server 94.245.121.251 and client 8.8.8.8.
            "2001:0:5ef5:79fb:0:0:f7f7:f7f7",
        ] {
            assert_eq!(kind(ip), None, "{ip}");
        }
    }

    #[test]
    fn special_purpose_ipv6_ranges_that_are_not_globally_reachable_are_refused() {
        for ip in [
            "3fff::1",
            "2001:2::1",
            "2001:10::1",
            "100::1",
            "100:0:0:1::1",
            "5f00::1",
            "4000::1",
            "2001:1::4",
        ] {
            assert!(kind(ip).is_some(), "{ip}");
        }
        // Globally reachable entries of 2001::/23 (anycast services, ORCHIDv2) stay allowed.
        for ip in ["2001:1::1", "2001:3::1", "2001:4:112::1", "2001:20::1"] {
            assert_eq!(kind(ip), None, "{ip}");
        }
    }

    fn any_v4() -> impl Strategy<Value = Ipv4Addr> {
        any::<u32>().prop_map(Ipv4Addr::from_bits)
    }

    /// An address inside `net`: its network bits, random host bits.
    fn inside_v4(net: Ipv4Net, host: u32) -> Ipv4Addr {
        let mask = net.netmask().to_bits();
        Ipv4Addr::from_bits((net.network().to_bits() & mask) | (host & !mask))
    }

    fn inside_v6(net: Ipv6Net, host: u128) -> Ipv6Addr {
        let mask = net.netmask().to_bits();
        Ipv6Addr::from_bits((net.network().to_bits() & mask) | (host & !mask))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn every_ipv6_embedding_of_an_ipv4_address_is_classified_as_it(a in any_v4()) {
            for form in Embedding::ALL {
                let embedded = form.encode(a);
                // `::` and `::1` are themselves, not the compatible forms of 0.0.0.0 and 0.0.0.1.
                if form == Embedding::Compatible && a.to_bits() <= 1 {
                    prop_assert!(classify(IpAddr::V6(embedded)).is_some());
                    continue;
                }
                prop_assert_eq!(
                    classify(IpAddr::V6(embedded)),
                    classify_v4(a),
                    "{:?} {} as {}", form, a, embedded
                );
            }
        }

        #[test]
        fn every_address_of_a_refused_range_is_refused(host in any::<u128>()) {
            for &(net, expected) in REFUSED_V4 {
                let ip = inside_v4(net, host as u32);
                // 240.0.0.0/4 holds the more specific broadcast address.
                prop_assert!(classify(IpAddr::V4(ip)).is_some(), "{} in {} ({:?})", ip, net, expected);
            }
            for &(net, _) in REFUSED_V6 {
                let ip = inside_v6(net, host);
                prop_assert!(classify(IpAddr::V6(ip)).is_some(), "{} in {}", ip, net);
            }
            let outside_global_unicast = Ipv6Addr::from_bits(host & !(0b111 << 125) | (0b011 << 125));
            prop_assert!(classify(IpAddr::V6(outside_global_unicast)).is_some());
        }

        #[test]
        fn an_ipv4_address_outside_every_refused_range_is_allowed(a in any_v4()) {
            let listed = REFUSED_V4.iter().any(|(net, _)| net.contains(&a));
            prop_assert_eq!(classify(IpAddr::V4(a)).is_some(), listed);
        }

        #[test]
        fn classification_never_panics_on_any_ipv6_address(bits in any::<u128>()) {
            let _ = classify(IpAddr::V6(Ipv6Addr::from_bits(bits)));
        }
    }
}
