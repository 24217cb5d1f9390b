//! `allowed_hosts`: which hosts a plugin may call, parsed from its sidecar, and which resolved
//! addresses it may connect to.
//!
//! An entry is one of:
//! - `api.example.com` or `api.example.com:8080`: that host name (any case);
//! - `*.example.com[:port]`: any name below `example.com` (not `example.com` itself);
//! - `*[:port]`: any host name or address;
//! - `203.0.113.7[:port]`, `[2001:db8::1][:port]`: that address;
//! - `10.0.0.0/8`, `fd00::/8`: any address in the range, any port.
//!
//! Without a port an entry allows every port. A host name that resolves to a loopback,
//! private, link-local, unspecified or otherwise non-public address is refused unless an
//! address or range entry covers that address: naming `localhost` alone does not open
//! loopback, `127.0.0.1` (or `127.0.0.0/8`) does.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::bail;

/// Longest entry, in bytes (a DNS name is at most 253).
const MAX_ENTRY_BYTES: usize = 300;
/// Most entries one sidecar may list.
pub(crate) const MAX_ENTRIES: usize = 256;

/// Which ports an entry allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ports {
    Any,
    One(u16),
}

impl Ports {
    fn allows(self, port: u16) -> bool {
        match self {
            Ports::Any => true,
            Ports::One(p) => p == port,
        }
    }
}

/// One parsed entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    /// Any host name or address.
    Anything(Ports),
    /// A host name, lowercase.
    Name(String, Ports),
    /// Names ending in `.suffix` (the suffix kept with its leading dot, lowercase).
    Below(String, Ports),
    /// An address, or a range of `prefix` leading bits, any port when a range.
    Net(IpAddr, u8, Ports),
}

/// A plugin's parsed `allowed_hosts`. Empty: the plugin may call nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct AllowList {
    entries: Vec<Entry>,
}

/// The host of a request URI: a name or an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Host {
    /// A DNS name, lowercase.
    Name(String),
    /// An address literal.
    Ip(IpAddr),
}

impl Host {
    /// The host of a URI's authority (`example.com`, `10.1.2.3`, `[::1]`).
    pub(crate) fn parse(host: &str) -> Option<Self> {
        if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            return v6.parse::<Ipv6Addr>().ok().map(|ip| Host::Ip(ip.into()));
        }
        if let Ok(ip) = host.parse::<Ipv4Addr>() {
            return Some(Host::Ip(ip.into()));
        }
        let name = host.to_ascii_lowercase();
        valid_name(&name).then_some(Host::Name(name))
    }
}

impl AllowList {
    /// Parses every entry; the error names the first bad one (by position) and why.
    pub(crate) fn parse(entries: &[String]) -> anyhow::Result<Self> {
        if entries.len() > MAX_ENTRIES {
            bail!(
                "lists {} entries; at most {MAX_ENTRIES} are allowed",
                entries.len()
            );
        }
        let entries = entries
            .iter()
            .enumerate()
            .map(|(i, e)| parse_entry(e).map_err(|why| anyhow::anyhow!("entry {}: {why}", i + 1)))
            .collect::<anyhow::Result<_>>()?;
        Ok(Self { entries })
    }

    /// Whether the list allows anything.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether a request to `host:port` may be attempted.
    pub(crate) fn permits(&self, host: &Host, port: u16) -> bool {
        self.entries.iter().any(|entry| match (entry, host) {
            (Entry::Anything(ports), _) => ports.allows(port),
            (Entry::Name(name, ports), Host::Name(h)) => ports.allows(port) && name == h,
            (Entry::Below(suffix, ports), Host::Name(h)) => {
                ports.allows(port) && h.len() > suffix.len() && h.ends_with(suffix.as_str())
            }
            (Entry::Net(net, prefix, ports), Host::Ip(ip)) => {
                ports.allows(port) && contains(*net, *prefix, *ip)
            }
            _ => false,
        })
    }

    /// Whether the host may connect to `ip` on `port`: any public address, and a non-public
    /// one only when an address or range entry names it.
    pub(crate) fn may_connect(&self, ip: IpAddr, port: u16) -> bool {
        let ip = canonical(ip);
        !non_public(ip)
            || self.entries.iter().any(|entry| match entry {
                Entry::Net(net, prefix, ports) => {
                    ports.allows(port) && contains(canonical(*net), *prefix, ip)
                }
                _ => false,
            })
    }
}

fn parse_entry(entry: &str) -> Result<Entry, String> {
    if entry.is_empty() {
        return Err("is empty: write a host name, an address or a range".into());
    }
    if entry.len() > MAX_ENTRY_BYTES {
        return Err(format!("is longer than {MAX_ENTRY_BYTES} bytes"));
    }
    if entry.contains("://") {
        return Err("has a scheme: write the host alone, e.g. \"api.example.com:443\"".into());
    }
    if entry
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '/' | '@' | '?' | '#'))
        && !is_range(entry)
    {
        return Err(
            "may hold a host, an optional :port, or an address range (no path, user or spaces)"
                .into(),
        );
    }
    if let Some((net, prefix)) = entry.split_once('/') {
        return parse_range(net, prefix);
    }
    let (host, ports) = split_port(entry)?;
    if host == "*" {
        return Ok(Entry::Anything(ports));
    }
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        let ip: Ipv6Addr = v6
            .parse()
            .map_err(|_| format!("[{}] is not an IPv6 address", v6.escape_debug()))?;
        return Ok(Entry::Net(ip.into(), 128, ports));
    }
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return Ok(Entry::Net(ip.into(), 32, ports));
    }
    let lower = host.to_ascii_lowercase();
    if let Some(suffix) = lower.strip_prefix("*.") {
        if !valid_name(suffix) {
            return Err(format!(
                "{} is not a host name after \"*.\"",
                suffix.escape_debug()
            ));
        }
        return Ok(Entry::Below(format!(".{suffix}"), ports));
    }
    if lower.contains('*') {
        return Err(
            "a wildcard may only be the whole host (\"*\") or its first label (\"*.example.com\")"
                .into(),
        );
    }
    if !valid_name(&lower) {
        return Err(format!(
            "{} is not a host name, an IPv4 address or a bracketed IPv6 address",
            host.escape_debug()
        ));
    }
    Ok(Entry::Name(lower, ports))
}

fn is_range(entry: &str) -> bool {
    entry.matches('/').count() == 1
        && !entry
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '@' | '?' | '#'))
}

fn parse_range(net: &str, prefix: &str) -> Result<Entry, String> {
    let ip: IpAddr = net.parse().map_err(|_| {
        format!(
            "{} is not an address: a range is written like 10.0.0.0/8 or fd00::/8",
            net.escape_debug()
        )
    })?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix: u8 = prefix.parse().ok().filter(|p| *p <= max).ok_or_else(|| {
        format!(
            "the prefix length /{} must be a number from 0 to {max}",
            prefix.escape_debug()
        )
    })?;
    if mask(ip, prefix) != ip {
        return Err(format!(
            "{ip}/{prefix} has bits set past the prefix: write {}/{prefix}",
            mask(ip, prefix)
        ));
    }
    Ok(Entry::Net(ip, prefix, Ports::Any))
}

/// Splits `host:port` (or `[v6]:port`); no port allows any.
fn split_port(entry: &str) -> Result<(&str, Ports), String> {
    let (host, port) = if entry.starts_with('[') {
        match entry.rfind("]:") {
            Some(i) => (&entry[..=i], Some(&entry[i + 2..])),
            None => (entry, None),
        }
    } else if entry.matches(':').count() > 1 {
        return Err("an IPv6 address goes in brackets, e.g. \"[2001:db8::1]:443\"".into());
    } else {
        match entry.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (entry, None),
        }
    };
    let ports = match port {
        None | Some("*") => Ports::Any,
        Some(port) => Ports::One(port.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
            format!(
                "port {} must be a number from 1 to 65535, or *",
                port.escape_debug()
            )
        })?),
    };
    if host.is_empty() {
        return Err("has a port but no host".into());
    }
    Ok((host, ports))
}

/// A DNS name: labels of letters, digits, `-` and `_`, at most 253 bytes.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) as the IPv4 address they reach.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(bits & m))
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(bits & m))
        }
    }
}

/// Whether `ip` is in `net/prefix` (same family only).
fn contains(net: IpAddr, prefix: u8, ip: IpAddr) -> bool {
    net.is_ipv4() == ip.is_ipv4() && mask(ip, prefix) == mask(net, prefix)
}

/// Addresses a plugin reaches only when the operator lists them: this machine, private and
/// shared networks, link-local, unspecified, multicast, reserved and translation ranges.
pub(crate) fn non_public(ip: IpAddr) -> bool {
    const V4: [(Ipv4Addr, u8); 11] = [
        (Ipv4Addr::new(0, 0, 0, 0), 8),      // "this network", unspecified
        (Ipv4Addr::new(10, 0, 0, 0), 8),     // private
        (Ipv4Addr::new(100, 64, 0, 0), 10),  // carrier-grade NAT
        (Ipv4Addr::new(127, 0, 0, 0), 8),    // loopback
        (Ipv4Addr::new(169, 254, 0, 0), 16), // link-local (cloud metadata)
        (Ipv4Addr::new(172, 16, 0, 0), 12),  // private
        (Ipv4Addr::new(192, 0, 0, 0), 24),   // IETF protocol assignments
        (Ipv4Addr::new(192, 168, 0, 0), 16), // private
        (Ipv4Addr::new(198, 18, 0, 0), 15),  // benchmarking
        (Ipv4Addr::new(224, 0, 0, 0), 4),    // multicast
        (Ipv4Addr::new(240, 0, 0, 0), 4),    // reserved, broadcast
    ];
    const V6: [(Ipv6Addr, u8); 7] = [
        (Ipv6Addr::UNSPECIFIED, 128),
        (Ipv6Addr::LOCALHOST, 128),
        (Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0), 96), // IPv4-mapped, unless canonical
        (Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96), // NAT64
        (Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7),  // unique local
        (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10), // link-local
        (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8),  // multicast
    ];
    match canonical(ip) {
        IpAddr::V4(v4) => V4
            .iter()
            .any(|(net, p)| contains((*net).into(), *p, v4.into())),
        IpAddr::V6(v6) => V6
            .iter()
            .any(|(net, p)| contains((*net).into(), *p, v6.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> AllowList {
        AllowList::parse(&entries.iter().map(|e| (*e).to_owned()).collect::<Vec<_>>()).unwrap()
    }

    fn host(h: &str) -> Host {
        Host::parse(h).unwrap()
    }

    #[test]
    fn names_wildcards_and_ports() {
        let l = list(&["api.example.com:8080", "*.example.org", "Svc.Internal"]);
        assert!(l.permits(&host("API.example.com"), 8080));
        assert!(!l.permits(&host("api.example.com"), 80));
        assert!(l.permits(&host("a.b.example.org"), 443));
        assert!(!l.permits(&host("example.org"), 443));
        assert!(!l.permits(&host("badexample.org"), 443));
        assert!(l.permits(&host("svc.internal"), 1));
        assert!(!l.permits(&host("10.0.0.1"), 80));
        assert!(!AllowList::default().permits(&host("example.com"), 80));
        assert!(list(&["*:443"]).permits(&host("anything.test"), 443));
        assert!(!list(&["*:443"]).permits(&host("anything.test"), 80));
    }

    #[test]
    fn addresses_and_ranges() {
        let l = list(&["10.0.0.0/8", "[::1]:9000", "127.0.0.1:7000"]);
        assert!(l.permits(&host("10.9.8.7"), 1234));
        assert!(l.permits(&host("[::1]"), 9000));
        assert!(!l.permits(&host("[::1]"), 9001));
        assert!(l.permits(&host("127.0.0.1"), 7000));
        assert!(!l.permits(&host("127.0.0.2"), 7000));
        assert!(!l.permits(&host("11.0.0.1"), 80));
    }

    #[test]
    fn non_public_addresses_need_an_address_entry() {
        let by_name = list(&["localhost"]);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        for special in [
            "127.0.0.1",
            "10.1.1.1",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "224.0.0.1",
        ] {
            assert!(non_public(ip(special)), "{special}");
            assert!(!by_name.may_connect(ip(special), 80), "{special}");
        }
        assert!(!non_public(ip("93.184.216.34")));
        assert!(!non_public(ip("2606:4700::1111")));
        assert!(by_name.may_connect(ip("93.184.216.34"), 80));
        let loopback = list(&["localhost", "127.0.0.0/8"]);
        assert!(loopback.may_connect(ip("127.0.0.1"), 80));
        assert!(loopback.may_connect(ip("::ffff:127.0.0.1"), 80));
        assert!(!loopback.may_connect(ip("::1"), 80));
        let one_port = list(&["127.0.0.1:7000"]);
        assert!(one_port.may_connect(ip("127.0.0.1"), 7000));
        assert!(!one_port.may_connect(ip("127.0.0.1"), 7001));
    }

    #[test]
    fn bad_entries_say_why() {
        for (entry, why) in [
            ("", "is empty"),
            ("http://example.com", "has a scheme"),
            ("example.com/path", "is not an address"),
            ("example.com:0", "port 0 must be"),
            ("example.com:99999", "port 99999 must be"),
            ("a.*.example.com", "a wildcard may only be"),
            ("*.", "is not a host name after"),
            ("10.0.0.0/33", "prefix length /33"),
            ("10.0.0.1/8", "write 10.0.0.0/8"),
            ("::1", "in brackets"),
            ("[zz]:1", "is not an IPv6 address"),
            ("user@example.com", "no path, user or spaces"),
            (":80", "no host"),
            ("exa mple.com", "no path, user or spaces"),
        ] {
            let e = AllowList::parse(&[entry.to_owned()])
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with("entry 1: ") && e.contains(why),
                "{entry:?}: {e}"
            );
        }
        let many = vec!["a.test".to_owned(); MAX_ENTRIES + 1];
        assert!(AllowList::parse(&many).is_err());
    }
}
