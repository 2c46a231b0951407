//! Who is on the other end of a request: the connection's peer, or, when the peer is one of
//! `server.trusted_proxies`, the client the proxies name in the one header they are configured
//! to write (`server.client_address_header`: `X-Forwarded-For`, or RFC 7239 `Forwarded`). The
//! other header is ignored, since proxies pass a client's own copy of it through untouched. Only
//! the hops appended by trusted proxies are believed: the address is the right-most one that is
//! not itself a trusted proxy, so a client cannot choose its own address by sending the header.

use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use axum::http::HeaderMap;
use axum::http::request::Parts;

pub use crate::config::{ForwardedHeader, TrustedProxies};

/// The request's client address (see the module documentation), if the connection has one.
pub fn client_ip(parts: &Parts, proxies: &TrustedProxies) -> Option<IpAddr> {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())?;
    Some(behind_proxies(peer, &parts.headers, proxies))
}

/// The client address for a request from `peer` with `headers`.
pub fn behind_proxies(peer: IpAddr, headers: &HeaderMap, proxies: &TrustedProxies) -> IpAddr {
    if !proxies.trusts(&peer) {
        return peer;
    }
    let Some(hops) = forwarded_hops(headers, proxies.header) else {
        return peer;
    };
    let mut client = peer;
    for hop in hops.iter().rev() {
        match hop {
            // A hop no trusted proxy could have written: stop at the last address believed.
            None => return client,
            Some(ip) if proxies.trusts(ip) => client = *ip,
            Some(ip) => return *ip,
        }
    }
    client
}

/// The addresses the proxies recorded in `header`, client first. `None` for a hop that is not
/// an address (`unknown`, an obfuscated name).
fn forwarded_hops(headers: &HeaderMap, header: ForwardedHeader) -> Option<Vec<Option<IpAddr>>> {
    let joined = |name: &str| {
        let values: Vec<&str> = headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        (!values.is_empty()).then(|| values.join(","))
    };
    if header == ForwardedHeader::Forwarded {
        let forwarded = joined("forwarded")?;
        let hops = forwarded
            .split(',')
            .map(|element| {
                element
                    .split(';')
                    .filter_map(|pair| pair.split_once('='))
                    .find(|(name, _)| name.trim().eq_ignore_ascii_case("for"))
                    .and_then(|(_, value)| address(value.trim().trim_matches('"')))
            })
            .collect();
        return Some(hops);
    }
    joined("x-forwarded-for").map(|list| list.split(',').map(|hop| address(hop.trim())).collect())
}

/// `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1` or `[2001:db8::1]:4711`.
fn address(text: &str) -> Option<IpAddr> {
    text.parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            text.strip_prefix('[')
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse().ok())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn proxies(header: ForwardedHeader) -> TrustedProxies {
        TrustedProxies {
            networks: vec!["10.0.0.0/8".parse().unwrap()],
            header,
        }
    }

    #[test]
    fn without_trusted_proxies_the_peer_is_the_client_whatever_it_claims() {
        let claimed = headers(&[("x-forwarded-for", "203.0.113.9")]);
        let none = TrustedProxies {
            networks: vec![],
            header: ForwardedHeader::XForwardedFor,
        };
        let peer = ip("198.51.100.1");
        assert_eq!(behind_proxies(peer, &claimed, &none), peer);
    }

    #[test]
    fn behind_a_trusted_proxy_the_right_most_untrusted_hop_is_the_client() {
        let trusted = proxies(ForwardedHeader::XForwardedFor);
        let lb = ip("10.0.0.5");
        // The client put a fake address first; the proxy appended the real one.
        let forged = headers(&[("x-forwarded-for", "192.0.2.66, 203.0.113.9")]);
        assert_eq!(behind_proxies(lb, &forged, &trusted), ip("203.0.113.9"));
        // Two trusted proxies in a row.
        let chain = headers(&[("x-forwarded-for", "203.0.113.9, 10.1.2.3")]);
        assert_eq!(behind_proxies(lb, &chain, &trusted), ip("203.0.113.9"));
        // Several header lines are one list; ports and brackets are accepted.
        let split = headers(&[
            ("x-forwarded-for", "192.0.2.66"),
            ("x-forwarded-for", "[2001:db8::7]:443"),
        ]);
        assert_eq!(behind_proxies(lb, &split, &trusted), ip("2001:db8::7"));
        // Only the configured header counts: proxies pass a client's own copy of the other one
        // through untouched.
        let both = headers(&[
            (
                "forwarded",
                r#"for=192.0.2.60;proto=https, for="[2001:db8:cafe::17]:4711""#,
            ),
            ("x-forwarded-for", "198.51.100.3"),
        ]);
        assert_eq!(behind_proxies(lb, &both, &trusted), ip("198.51.100.3"));
        let standard = proxies(ForwardedHeader::Forwarded);
        assert_eq!(
            behind_proxies(lb, &both, &standard),
            ip("2001:db8:cafe::17")
        );
        let only_forwarded = headers(&[("forwarded", "for=192.0.2.60")]);
        assert_eq!(behind_proxies(lb, &only_forwarded, &trusted), lb);
        // No header, or a hop that is not an address: the last address believed.
        assert_eq!(behind_proxies(lb, &HeaderMap::new(), &trusted), lb);
        let unknown = headers(&[("forwarded", "for=unknown")]);
        assert_eq!(behind_proxies(lb, &unknown, &standard), lb);
    }
}
