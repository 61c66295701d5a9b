//! The SSRF guard: deliveries go to the public internet only, unless allow-listed.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use http::uri::Authority;
use http::Uri;
use ipnet::IpNet;

use super::BoxError;

mod connect;
mod ranges;

pub use connect::{GuardedConnector, GuardedResolver};
pub(crate) use ranges::classify;

/// Why an endpoint or address was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RefusalKind {
    /// The URL is not `http` or `https` (or `https` without the `rustls` feature).
    Scheme,
    /// The URL cannot be used (no host, credentials in it, too long, not absolute).
    InvalidUrl,
    /// Loopback.
    Loopback,
    /// A private range.
    Private,
    /// Link-local (cloud metadata included).
    LinkLocal,
    /// IPv6 unique-local or site-local.
    UniqueLocal,
    /// Shared address space (carrier-grade NAT).
    SharedAddress,
    /// Multicast.
    Multicast,
    /// Unspecified (`0.0.0.0`, `::`) or "this network".
    Unspecified,
    /// The IPv4 broadcast address.
    Broadcast,
    /// Documentation or benchmarking ranges.
    Documentation,
    /// Reserved or protocol-assignment ranges.
    Reserved,
}

impl RefusalKind {
    fn describe(self) -> &'static str {
        match self {
            Self::Scheme => "only http and https endpoints are allowed",
            Self::InvalidUrl => "the endpoint URL cannot be used",
            Self::Loopback => "a loopback address",
            Self::Private => "a private address",
            Self::LinkLocal => "a link-local address",
            Self::UniqueLocal => "a unique-local address",
            Self::SharedAddress => "a shared (CGNAT) address",
            Self::Multicast => "a multicast address",
            Self::Unspecified => "an unspecified address",
            Self::Broadcast => "the broadcast address",
            Self::Documentation => "a documentation or benchmarking address",
            Self::Reserved => "a reserved address",
        }
    }
}

/// An endpoint refused by the [`SsrfGuard`]. Found in the error chain of a refused connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    kind: RefusalKind,
    detail: String,
}

impl Refusal {
    pub(crate) fn new(kind: RefusalKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
        }
    }

    fn address(kind: RefusalKind, ip: IpAddr) -> Self {
        Self::new(kind, format!("{ip} is {}", kind.describe()))
    }

    /// The reason class.
    pub fn kind(&self) -> RefusalKind {
        self.kind
    }

    /// A short explanation safe to show to the caller.
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// Finds a refusal in an error's `source()` chain.
    pub fn find<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a Self> {
        let mut current = Some(error);
        while let Some(err) = current {
            if let Some(refusal) = err.downcast_ref::<Self>() {
                return Some(refusal);
            }
            current = err.source();
        }
        None
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "endpoint refused: {}", self.detail)
    }
}

impl std::error::Error for Refusal {}

/// An IP range in CIDR notation (`10.0.0.0/8`, `::1/128`, or a bare address): an entry of the
/// guard's allow-list, which is only ever given as text ([`SsrfGuard::allow_cidr`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Cidr(IpNet);

impl Cidr {
    /// Whether `ip` is inside the range (IPv4-mapped IPv6 addresses match IPv4 ranges).
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&canonical(ip))
    }
}

impl From<IpAddr> for Cidr {
    fn from(ip: IpAddr) -> Self {
        Self(IpNet::from(ip))
    }
}

/// A CIDR that does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CidrError(String);

impl fmt::Display for CidrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid CIDR `{}`", self.0)
    }
}

impl std::error::Error for CidrError {}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let net = match text.parse::<IpNet>() {
            Ok(net) => net,
            Err(_) => text
                .parse::<IpAddr>()
                .map(IpNet::from)
                .map_err(|_| CidrError(text.to_owned()))?,
        };
        Ok(Self(net))
    }
}

/// The SSRF policy: which endpoints deliveries may reach, the public internet only unless
/// allow-listed. Cheap to clone.
///
/// Webhook endpoints are chosen by callers, so without a guard a caller could make the server
/// POST to its own admin ports, to other hosts of a private network, or to a cloud metadata
/// service (`169.254.169.254`). The guard refuses:
///
/// | range | examples |
/// |---|---|
/// | loopback | `127.0.0.0/8`, `::1` |
/// | private | `10.0.0.0/8`, `172.16.0.0/12`, `192.168.0.0/16` |
/// | link-local | `169.254.0.0/16` (cloud metadata), `fe80::/10` |
/// | unique-local / site-local | `fc00::/7`, `fec0::/10` |
/// | shared (CGNAT) | `100.64.0.0/10` |
/// | multicast, broadcast, unspecified | `224.0.0.0/4`, `ff00::/8`, `255.255.255.255`, `0.0.0.0/8`, `::` |
/// | documentation, benchmarking | `192.0.2.0/24`, `198.51.100.0/24`, `203.0.113.0/24`, `198.18.0.0/15`, `2001:db8::/32`, `3fff::/20`, `2001:2::/48` |
/// | reserved, not globally reachable | `192.0.0.0/24`, `192.88.99.0/24`, `240.0.0.0/4`, `100::/64`, `2001::/23` (but its global anycast entries), local-use NAT64 `64:ff9b:1::/48`, `5f00::/16`, every IPv6 address outside `2000::/3` |
/// | an IPv4 address carried in IPv6, judged as that address | mapped `::ffff:0:0/96`, compatible `::/96`, translated `::ffff:0:0:0/96`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`, Teredo `2001::/32` (server and client) |
///
/// The ranges are the IANA special-purpose address registries' entries that are not globally
/// reachable. Only `http` and `https` are accepted, with a port (when given) in 1–65535. The check runs on the **addresses actually connected
/// to**: the default client resolves names through [`GuardedResolver`], which drops refused
/// addresses (so DNS rebinding cannot slip through between a check and the connect), and
/// [`GuardedConnector`] checks IP-literal hosts, which skip the resolver.
///
/// For development and tests, allow ranges or host names explicitly:
///
/// ```
/// use tower_webhooks::delivery::SsrfGuard;
///
/// let guard = SsrfGuard::new();
/// assert!(guard.check_ip("127.0.0.1".parse().unwrap()).is_err());
/// assert!(guard.check_ip("169.254.169.254".parse().unwrap()).is_err());
/// assert!(guard.check_ip("93.184.215.14".parse().unwrap()).is_ok());
///
/// let dev = SsrfGuard::new().allow_cidr("127.0.0.0/8").unwrap().allow_host("receiver.internal");
/// assert!(dev.check_ip("127.0.0.1".parse().unwrap()).is_ok());
/// assert!(dev.check_url("http://receiver.internal:8080/hook").is_ok());
/// assert!(dev.check_url("ftp://example.com/").is_err());
/// ```
#[derive(Debug, Clone)]
pub struct SsrfGuard {
    enabled: bool,
    allow_cidrs: Arc<[Cidr]>,
    allow_hosts: Arc<[String]>,
}

impl Default for SsrfGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl SsrfGuard {
    /// The guard, on, with an empty allow-list.
    pub fn new() -> Self {
        Self {
            enabled: true,
            allow_cidrs: Arc::from([]),
            allow_hosts: Arc::from([]),
        }
    }

    /// No address checks at all (only the `http`/`https` scheme check remains). For trusted
    /// deployments where every endpoint comes from the operator.
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            ..Self::new()
        }
    }

    /// Allows a range (`"127.0.0.0/8"`, `"10.1.2.3"`, `"::1/128"`).
    ///
    /// # Errors
    ///
    /// [`CidrError`] when `cidr` does not parse.
    pub fn allow_cidr(mut self, cidr: &str) -> Result<Self, CidrError> {
        let cidr = cidr.parse()?;
        let mut cidrs = self.allow_cidrs.to_vec();
        cidrs.push(cidr);
        self.allow_cidrs = cidrs.into();
        Ok(self)
    }

    /// Allows a host name (exact, case-insensitive) whatever it resolves to, or an IP literal.
    pub fn allow_host(mut self, host: &str) -> Self {
        let host = host.trim().trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = host.parse::<IpAddr>() {
            let mut cidrs = self.allow_cidrs.to_vec();
            cidrs.push(Cidr::from(ip));
            self.allow_cidrs = cidrs.into();
        } else {
            let mut hosts = self.allow_hosts.to_vec();
            hosts.push(host.to_ascii_lowercase());
            self.allow_hosts = hosts.into();
        }
        self
    }

    /// Allows the loopback ranges (`127.0.0.0/8`, `::1`) and the name `localhost`: for local
    /// development and tests.
    pub fn allow_loopback(mut self) -> Self {
        let mut cidrs = self.allow_cidrs.to_vec();
        cidrs.push(Cidr(IpNet::V4(ipnet::Ipv4Net::new_assert(
            Ipv4Addr::new(127, 0, 0, 0),
            8,
        ))));
        cidrs.push(Cidr::from(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        self.allow_cidrs = cidrs.into();
        self.allow_host("localhost")
    }

    /// Whether address checks are on.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// Whether `host` is allow-listed by name.
    pub fn is_host_allowed(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.');
        self.allow_hosts
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(host))
    }

    /// Checks one address.
    ///
    /// # Errors
    ///
    /// [`Refusal`] when the address is in a refused range and not allow-listed.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Refusal> {
        if !self.enabled || self.allow_cidrs.iter().any(|cidr| cidr.contains(ip)) {
            return Ok(());
        }
        match classify(ip) {
            Some(kind) => Err(Refusal::address(kind, ip)),
            None => Ok(()),
        }
    }

    /// Checks a URL's scheme and, when the host is an IP literal, the address. Host names are
    /// checked when they are resolved (see [`GuardedResolver`] and [`SsrfGuard::resolve`]).
    ///
    /// # Errors
    ///
    /// [`Refusal`] for another scheme, an unusable URL, or a refused literal address.
    pub fn check_url(&self, url: &str) -> Result<Uri, Refusal> {
        let uri: Uri = url.parse().map_err(|_| {
            Refusal::new(RefusalKind::InvalidUrl, "the endpoint is not a valid URL")
        })?;
        self.check_uri(&uri)?;
        Ok(uri)
    }

    /// [`check_url`](Self::check_url) for a parsed URI.
    ///
    /// # Errors
    ///
    /// As [`check_url`](Self::check_url).
    pub fn check_uri(&self, uri: &Uri) -> Result<(), Refusal> {
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") if cfg!(feature = "rustls") => {}
            Some("https") => {
                return Err(Refusal::new(
                    RefusalKind::Scheme,
                    "https endpoints need the `rustls` feature",
                ))
            }
            _ => {
                return Err(Refusal::new(
                    RefusalKind::Scheme,
                    RefusalKind::Scheme.describe(),
                ))
            }
        }
        let authority = uri
            .authority()
            .ok_or_else(|| Refusal::new(RefusalKind::InvalidUrl, "the endpoint has no host"))?;
        if authority.as_str().contains('@') {
            return Err(Refusal::new(
                RefusalKind::InvalidUrl,
                "credentials in the endpoint URL are not supported",
            ));
        }
        check_port(authority)?;
        let host = authority.host();
        if host.is_empty() {
            return Err(Refusal::new(
                RefusalKind::InvalidUrl,
                "the endpoint has no host",
            ));
        }
        if let Some(ip) = literal_ip(host) {
            return self.check_ip(ip);
        }
        Ok(())
    }

    /// Resolves `host` (with `port`) and keeps only allowed addresses: what the connector does,
    /// also usable ahead of time (the forward layer checks async endpoints when it accepts them).
    ///
    /// # Errors
    ///
    /// The resolver's I/O error, or a [`Refusal`] (boxed) when every address was refused.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, BoxError> {
        if let Some(ip) = literal_ip(host) {
            self.check_ip(ip)?;
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
        Ok(self.filter(host, addrs)?)
    }

    /// Keeps the allowed addresses of a resolution of `host`; all refused is a [`Refusal`].
    fn filter(&self, host: &str, addrs: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, Refusal> {
        if !self.enabled || self.is_host_allowed(host) || addrs.is_empty() {
            return Ok(addrs);
        }
        let mut first_refusal = None;
        let allowed: Vec<SocketAddr> = addrs
            .into_iter()
            .filter(|addr| match self.check_ip(addr.ip()) {
                Ok(()) => true,
                Err(refusal) => {
                    first_refusal.get_or_insert(refusal);
                    false
                }
            })
            .collect();
        match first_refusal {
            Some(refusal) if allowed.is_empty() => Err(Refusal::new(
                refusal.kind,
                format!("{host} resolves to {}", refusal.kind.describe()),
            )),
            _ => Ok(allowed),
        }
    }
}

/// Refuses a port outside 1–65535: `http::Uri` accepts any digits there but reports no port
/// for them, so the request would silently go to the scheme's default port instead.
fn check_port(authority: &Authority) -> Result<(), Refusal> {
    let text = authority.as_str();
    // The port follows the last `:` after an IPv6 literal's closing bracket.
    let after_host = text.rfind(']').map_or(text, |end| &text[end..]);
    let Some((_, port)) = after_host.rsplit_once(':') else {
        return Ok(());
    };
    if port.is_empty() {
        return Ok(());
    }
    match port.parse::<u16>() {
        Ok(1..) => Ok(()),
        _ => Err(Refusal::new(
            RefusalKind::InvalidUrl,
            "the endpoint's port must be between 1 and 65535",
        )),
    }
}

/// Parses a URI host as an IP literal (`[::1]` brackets allowed).
pub(crate) fn literal_ip(host: &str) -> Option<IpAddr> {
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.parse().ok()
}

/// IPv4-mapped IPv6 addresses as IPv4, everything else unchanged (so an allow-listed IPv4 range
/// also allows its mapped form).
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(ip: &str) -> Option<RefusalKind> {
        classify(ip.parse().unwrap())
    }

    #[test]
    fn ranges() {
        for (ip, kind) in [
            ("127.0.0.1", RefusalKind::Loopback),
            ("127.255.0.9", RefusalKind::Loopback),
            ("10.1.2.3", RefusalKind::Private),
            ("172.16.0.1", RefusalKind::Private),
            ("172.31.255.255", RefusalKind::Private),
            ("192.168.1.1", RefusalKind::Private),
            ("169.254.169.254", RefusalKind::LinkLocal),
            ("100.64.0.1", RefusalKind::SharedAddress),
            ("100.127.255.254", RefusalKind::SharedAddress),
            ("224.0.0.1", RefusalKind::Multicast),
            ("0.0.0.0", RefusalKind::Unspecified),
            ("255.255.255.255", RefusalKind::Broadcast),
            ("192.0.2.10", RefusalKind::Documentation),
            ("240.0.0.1", RefusalKind::Reserved),
            ("::1", RefusalKind::Loopback),
            ("::", RefusalKind::Unspecified),
            ("fe80::1", RefusalKind::LinkLocal),
            ("fd00::1", RefusalKind::UniqueLocal),
            ("fc00::1", RefusalKind::UniqueLocal),
            ("ff02::1", RefusalKind::Multicast),
            ("::ffff:127.0.0.1", RefusalKind::Loopback),
            ("::ffff:169.254.169.254", RefusalKind::LinkLocal),
            ("64:ff9b::10.0.0.1", RefusalKind::Private),
            ("2002:a9fe:a9fe::1", RefusalKind::LinkLocal),
            ("2001:db8::1", RefusalKind::Documentation),
        ] {
            assert_eq!(refused(ip), Some(kind), "{ip}");
        }
        for ip in [
            "93.184.215.14",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert_eq!(refused(ip), None, "{ip}");
        }
    }

    #[test]
    fn urls_and_allow_list() {
        let guard = SsrfGuard::new();
        assert_eq!(
            guard.check_url("http://127.0.0.1:9/").unwrap_err().kind(),
            RefusalKind::Loopback
        );
        assert_eq!(
            guard
                .check_url("http://[::ffff:7f00:1]/")
                .unwrap_err()
                .kind(),
            RefusalKind::Loopback
        );
        assert!(guard.check_url("file:///etc/passwd").is_err());
        assert_eq!(
            guard.check_url("gopher://x/").unwrap_err().kind(),
            RefusalKind::Scheme
        );
        assert_eq!(
            guard
                .check_url("http://u:p@example.com/")
                .unwrap_err()
                .kind(),
            RefusalKind::InvalidUrl
        );
        assert_eq!(
            guard.check_url("/relative").unwrap_err().kind(),
            RefusalKind::Scheme
        );
        assert!(guard.check_url("https://example.com/hook").is_ok());
        assert!(
            guard.check_url("http://localhost:8080/").is_ok(),
            "names are checked at resolution"
        );
        let dev = SsrfGuard::new().allow_loopback();
        assert!(dev.check_url("http://127.0.0.1:9/").is_ok());
        assert!(dev.check_url("http://[::1]:9/").is_ok());
        assert!(dev.check_url("http://169.254.169.254/").is_err());
        let filtered = SsrfGuard::new()
            .filter(
                "mixed.example",
                vec![
                    "127.0.0.1:80".parse().unwrap(),
                    "8.8.8.8:80".parse().unwrap(),
                ],
            )
            .unwrap();
        assert_eq!(filtered, vec!["8.8.8.8:80".parse::<SocketAddr>().unwrap()]);
        let err = SsrfGuard::new()
            .filter("localhost", vec!["127.0.0.1:80".parse().unwrap()])
            .unwrap_err();
        assert_eq!(err.kind(), RefusalKind::Loopback);
        assert!(err.detail().contains("localhost"));
        assert!(SsrfGuard::new()
            .allow_host("LocalHost")
            .filter("localhost", vec!["127.0.0.1:80".parse().unwrap()])
            .is_ok());
        assert!(SsrfGuard::disabled()
            .check_ip("127.0.0.1".parse().unwrap())
            .is_ok());
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("10.0.0.0/8/1".parse::<Cidr>().is_err());
        assert!("::1"
            .parse::<Cidr>()
            .unwrap()
            .contains("::1".parse().unwrap()));
        let cidr: Cidr = "172.16.0.0/12".parse().unwrap();
        assert!(cidr.contains("172.20.1.1".parse().unwrap()));
        assert!(!cidr.contains("172.32.1.1".parse().unwrap()));
    }

    proptest::proptest! {
        #[test]
        fn a_url_port_is_accepted_exactly_in_1_to_65535(port in 0u32..200_000) {
            let checked = SsrfGuard::new().check_url(&format!("http://example.com:{port}/"));
            proptest::prop_assert_eq!(checked.is_ok(), (1..=65535).contains(&port));
        }

        #[test]
        fn a_url_with_an_ipv6_literal_is_judged_by_the_ipv4_address_it_carries(bits in proptest::prelude::any::<u32>()) {
            let a = Ipv4Addr::from_bits(bits);
            let guard = SsrfGuard::new();
            for form in ranges::Embedding::ALL {
                if form == ranges::Embedding::Compatible && bits <= 1 {
                    continue;
                }
                let url = format!("http://[{}]:8080/hook", form.encode(a));
                proptest::prop_assert_eq!(
                    guard.check_url(&url).is_err(),
                    ranges::classify_v4(a).is_some(),
                    "{}", url
                );
            }
        }
    }

    #[test]
    fn ports_outside_1_to_65535_are_refused() {
        let guard = SsrfGuard::disabled();
        for url in [
            "http://127.0.0.1:69686/",
            "http://example.com:0/",
            "http://example.com:65536/",
            "http://[2606:4700::1111]:99999/",
            "https://example.com:-1/",
        ] {
            let refusal = guard.check_url(url).unwrap_err();
            assert_eq!(refusal.kind(), RefusalKind::InvalidUrl, "{url}");
            assert!(refusal.detail().contains("port"), "{url}");
        }
        for url in [
            "http://example.com:1/",
            "http://example.com:65535/",
            "http://[2606:4700::1111]:8080/",
            "http://[2606:4700::1111]/",
            "http://example.com/",
        ] {
            assert!(guard.check_url(url).is_ok(), "{url}");
        }
    }
}
