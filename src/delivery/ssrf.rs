//! The SSRF guard: deliveries go to the public internet only, unless allow-listed.
//!
//! Webhook endpoints are chosen by callers, so without a guard a caller could make the server
//! POST to its own admin ports, to other hosts of a private network, or to a cloud metadata
//! service (`169.254.169.254`). The guard refuses:
//!
//! | range | examples |
//! |---|---|
//! | loopback | `127.0.0.0/8`, `::1` |
//! | private | `10.0.0.0/8`, `172.16.0.0/12`, `192.168.0.0/16` |
//! | link-local | `169.254.0.0/16` (cloud metadata), `fe80::/10` |
//! | unique-local / site-local | `fc00::/7`, `fec0::/10` |
//! | shared (CGNAT) | `100.64.0.0/10` |
//! | multicast, broadcast, unspecified | `224.0.0.0/4`, `ff00::/8`, `255.255.255.255`, `0.0.0.0/8`, `::` |
//! | documentation, benchmarking, reserved | `192.0.2.0/24`, `198.51.100.0/24`, `203.0.113.0/24`, `2001:db8::/32`, `198.18.0.0/15`, `192.0.0.0/24`, `240.0.0.0/4` |
//! | the same, embedded in IPv6 | `::ffff:127.0.0.1`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16` |
//!
//! Only `http` and `https` are accepted. The check runs on the **addresses actually connected
//! to**: the default client resolves names through [`GuardedResolver`], which drops refused
//! addresses (so DNS rebinding cannot slip through between a check and the connect), and
//! [`GuardedConnector`] checks IP-literal hosts, which skip the resolver.
//!
//! For development and tests, allow ranges or host names explicitly:
//!
//! ```
//! use tower_webhooks::delivery::SsrfGuard;
//!
//! let guard = SsrfGuard::new();
//! assert!(guard.check_ip("127.0.0.1".parse().unwrap()).is_err());
//! assert!(guard.check_ip("169.254.169.254".parse().unwrap()).is_err());
//! assert!(guard.check_ip("93.184.215.14".parse().unwrap()).is_ok());
//!
//! let dev = SsrfGuard::new().allow_cidr("127.0.0.0/8").unwrap().allow_host("receiver.internal");
//! assert!(dev.check_ip("127.0.0.1".parse().unwrap()).is_ok());
//! assert!(dev.check_url("http://receiver.internal:8080/hook").is_ok());
//! assert!(dev.check_url("ftp://example.com/").is_err());
//! ```

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use tower_service::Service;

use super::BoxError;

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

/// An IP range in CIDR notation (`10.0.0.0/8`, `::1/128`, or a bare address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is inside the range (IPv4-mapped IPv6 addresses match IPv4 ranges).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.prefix)
            }
            _ => false,
        }
    }
}

fn prefix_eq(a: &[u8], b: &[u8], prefix: u8) -> bool {
    let full = usize::from(prefix / 8);
    let rest = prefix % 8;
    if a[..full] != b[..full] {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    (a[full] & mask) == (b[full] & mask)
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
        let err = || CidrError(text.to_owned());
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| err())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix.trim().parse::<u8>().map_err(|_| err())?,
            None => max,
        };
        if prefix > max {
            return Err(err());
        }
        Ok(Self { addr, prefix })
    }
}

/// The SSRF policy: which endpoints deliveries may reach. Cheap to clone.
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
            let prefix = if ip.is_ipv4() { 32 } else { 128 };
            let mut cidrs = self.allow_cidrs.to_vec();
            cidrs.push(Cidr { addr: ip, prefix });
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
        cidrs.push(Cidr {
            addr: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)),
            prefix: 8,
        });
        cidrs.push(Cidr {
            addr: IpAddr::V6(Ipv6Addr::LOCALHOST),
            prefix: 128,
        });
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

/// Parses a URI host as an IP literal (`[::1]` brackets allowed).
pub(crate) fn literal_ip(host: &str) -> Option<IpAddr> {
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.parse().ok()
}

/// IPv4-mapped IPv6 addresses as IPv4, everything else unchanged.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// The refused class of an address, or `None` for a public one.
pub fn classify(ip: IpAddr) -> Option<RefusalKind> {
    match canonical(ip) {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<RefusalKind> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        _ if ip.is_loopback() => RefusalKind::Loopback,
        _ if ip.is_broadcast() => RefusalKind::Broadcast,
        (0, ..) => RefusalKind::Unspecified,
        (10, ..) | (192, 168, _) => RefusalKind::Private,
        (172, 16..=31, _) => RefusalKind::Private,
        (169, 254, _) => RefusalKind::LinkLocal,
        (100, 64..=127, _) => RefusalKind::SharedAddress,
        (224..=239, ..) => RefusalKind::Multicast,
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) | (198, 18..=19, _) => {
            RefusalKind::Documentation
        }
        (192, 0, 0) | (192, 88, 99) | (240..=255, ..) => RefusalKind::Reserved,
        _ => return None,
    })
}

fn classify_v6(ip: Ipv6Addr) -> Option<RefusalKind> {
    let segments = ip.segments();
    if ip.is_loopback() {
        return Some(RefusalKind::Loopback);
    }
    if ip.is_unspecified() {
        return Some(RefusalKind::Unspecified);
    }
    let embedded_v4 = |hi: u16, lo: u16| {
        let [a, b] = hi.to_be_bytes();
        let [c, d] = lo.to_be_bytes();
        Ipv4Addr::new(a, b, c, d)
    };
    Some(match segments[0] {
        0xff00..=0xffff => RefusalKind::Multicast,
        0xfe80..=0xfebf => RefusalKind::LinkLocal,
        0xfec0..=0xfeff => RefusalKind::UniqueLocal,
        0xfc00..=0xfdff => RefusalKind::UniqueLocal,
        0x2001 if segments[1] == 0x0db8 => RefusalKind::Documentation,
        // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) carry an IPv4 address.
        0x0064 if segments[1] == 0xff9b && segments[2..6] == [0; 4] => {
            return classify_v4(embedded_v4(segments[6], segments[7]))
        }
        0x2002 => return classify_v4(embedded_v4(segments[1], segments[2])),
        // IPv4-compatible (deprecated) ::a.b.c.d and the discard prefix 100::/64.
        0 if segments[1..6] == [0; 5] => return classify_v4(embedded_v4(segments[6], segments[7])),
        0x0100 if segments[1..4] == [0; 3] => RefusalKind::Reserved,
        _ => return None,
    })
}

/// A DNS resolver for hyper-util's `HttpConnector` that drops refused addresses.
///
/// A name whose every address is refused fails with a [`Refusal`] in the error chain, so the
/// engine records the attempt as refused (not as a network error to retry).
#[derive(Debug, Clone)]
pub struct GuardedResolver<R = GaiResolver> {
    inner: R,
    guard: SsrfGuard,
}

impl GuardedResolver {
    /// Wraps the system resolver (`getaddrinfo` on a blocking thread).
    pub fn new(guard: SsrfGuard) -> Self {
        Self::with_resolver(GaiResolver::new(), guard)
    }
}

impl<R> GuardedResolver<R> {
    /// Wraps any resolver `Service<Name>`.
    pub fn with_resolver(inner: R, guard: SsrfGuard) -> Self {
        Self { inner, guard }
    }
}

impl<R> Service<Name> for GuardedResolver<R>
where
    R: Service<Name>,
    R::Response: Iterator<Item = SocketAddr>,
    R::Error: Into<BoxError>,
    R::Future: Send + 'static,
{
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let guard = self.guard.clone();
        let resolving = self.inner.call(name.clone());
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = resolving.await.map_err(Into::into)?.collect();
            let allowed = guard.filter(name.as_str(), addrs).inspect_err(|refusal| {
                tracing::warn!(host = %name, reason = %refusal.detail(), "webhook endpoint refused by the SSRF guard");
            })?;
            Ok(allowed.into_iter())
        })
    }
}

/// A connector wrapper that refuses disallowed schemes and IP-literal hosts before connecting
/// (hyper-util's `HttpConnector` does not resolve IP literals, so the resolver never sees them).
#[derive(Debug, Clone)]
pub struct GuardedConnector<C> {
    inner: C,
    guard: SsrfGuard,
}

impl<C> GuardedConnector<C> {
    /// Wraps a connector `Service<Uri>`.
    pub fn new(inner: C, guard: SsrfGuard) -> Self {
        Self { inner, guard }
    }
}

impl<C> Service<Uri> for GuardedConnector<C>
where
    C: Service<Uri>,
    C::Error: Into<BoxError>,
{
    type Response = C::Response;
    type Error = BoxError;
    type Future = GuardedConnecting<C::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        // Both schemes reach this connector (TLS wraps the connected stream), so only the
        // address is checked here.
        let refused = uri
            .host()
            .and_then(literal_ip)
            .and_then(|ip| self.guard.check_ip(ip).err());
        match refused {
            Some(refusal) => {
                tracing::warn!(reason = %refusal.detail(), "webhook endpoint refused by the SSRF guard");
                GuardedConnecting::refused(refusal)
            }
            None => GuardedConnecting::connecting(self.inner.call(uri)),
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`GuardedConnector`].
    pub struct GuardedConnecting<F> {
        #[pin]
        inner: Option<F>,
        refusal: Option<Refusal>,
    }
}

impl<F> GuardedConnecting<F> {
    fn connecting(future: F) -> Self {
        Self {
            inner: Some(future),
            refusal: None,
        }
    }

    fn refused(refusal: Refusal) -> Self {
        Self {
            inner: None,
            refusal: Some(refusal),
        }
    }
}

impl<F> fmt::Debug for GuardedConnecting<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardedConnecting")
            .field("refusal", &self.refusal)
            .finish_non_exhaustive()
    }
}

impl<F, T, E> Future for GuardedConnecting<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.inner.as_pin_mut() {
            Some(inner) => inner.poll(cx).map_err(Into::into),
            None => Poll::Ready(Err(Box::new(this.refusal.take().unwrap_or_else(|| {
                Refusal::new(RefusalKind::InvalidUrl, "polled after completion")
            })))),
        }
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
        let cidr: Cidr = "172.16.0.0/12".parse().unwrap();
        assert!(cidr.contains("172.20.1.1".parse().unwrap()));
        assert!(!cidr.contains("172.32.1.1".parse().unwrap()));
    }
}
