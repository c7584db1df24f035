//! Field-level parsing shared by the Cilium and Kubernetes policy formats: ports, CIDRs,
//! protocols and int-or-string values.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::error::{FieldPath, PolicyErrorKind, SpecError};
use super::{CidrPeer, PortSpec};
use crate::protocol::Protocol;

/// A YAML value that may be written as a number or a string (`port: 80` or `port: "80"`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IntOrString {
    /// Written as a number.
    Int(i64),
    /// Written as a string.
    String(String),
}

impl IntOrString {
    /// The value as text.
    pub fn as_text(&self) -> String {
        match self {
            IntOrString::Int(n) => n.to_string(),
            IntOrString::String(s) => s.clone(),
        }
    }
}

/// A port field: a number, a name, or "any port".
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PortValue {
    Any,
    Number(u16),
    Name(String),
}

/// Whether `name` is a valid IANA service name as Kubernetes container ports use.
pub(crate) fn is_port_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.bytes().any(|b| b.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
}

/// Parses a port field; 0 and empty mean any port (Cilium's spelling).
pub(crate) fn parse_port(value: &IntOrString, path: &FieldPath) -> Result<PortValue, SpecError> {
    let text = value.as_text();
    let text = text.trim();
    if text.is_empty() {
        return Ok(PortValue::Any);
    }
    if let Ok(n) = text.parse::<i64>() {
        return match n {
            0 => Ok(PortValue::Any),
            1..=65535 => Ok(PortValue::Number(n as u16)),
            _ => Err(SpecError::at(path, PolicyErrorKind::Port(text.to_owned()))),
        };
    }
    if is_port_name(text) {
        Ok(PortValue::Name(text.to_owned()))
    } else {
        Err(SpecError::at(path, PolicyErrorKind::Port(text.to_owned())))
    }
}

/// Builds the port spec for a protocol, port and optional end port.
pub(crate) fn port_spec(
    protocol: Option<Protocol>,
    port: PortValue,
    end_port: Option<i64>,
    path: &FieldPath,
) -> Result<PortSpec, SpecError> {
    let end_path = path.field("endPort");
    match (port, end_port) {
        (PortValue::Any, None) => Ok(PortSpec::Range {
            protocol,
            first: 1,
            last: 65535,
        }),
        (PortValue::Any, Some(end)) => Err(SpecError::at(
            &end_path,
            PolicyErrorKind::EndPort {
                end_port: end,
                reason: "endPort needs a numeric port",
            },
        )),
        (PortValue::Number(p), None) => Ok(PortSpec::Range {
            protocol,
            first: p,
            last: p,
        }),
        (PortValue::Number(p), Some(end)) => {
            if end < i64::from(p) {
                Err(SpecError::at(
                    &end_path,
                    PolicyErrorKind::EndPort {
                        end_port: end,
                        reason: "endPort is below port",
                    },
                ))
            } else if end > 65535 {
                Err(SpecError::at(
                    &end_path,
                    PolicyErrorKind::EndPort {
                        end_port: end,
                        reason: "endPort is above 65535",
                    },
                ))
            } else {
                Ok(PortSpec::Range {
                    protocol,
                    first: p,
                    last: end as u16,
                })
            }
        }
        (PortValue::Name(_), Some(end)) => Err(SpecError::at(
            &end_path,
            PolicyErrorKind::EndPort {
                end_port: end,
                reason: "endPort cannot follow a named port",
            },
        )),
        (PortValue::Name(name), None) => Ok(PortSpec::Named { protocol, name }),
    }
}

/// Parses a CIDR; a bare address means a host prefix (/32 or /128).
pub(crate) fn parse_cidr(text: &str, path: &FieldPath) -> Result<IpNet, SpecError> {
    let trimmed = text.trim();
    if let Ok(net) = trimmed.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    match trimmed.parse::<std::net::IpAddr>() {
        Ok(addr) => Ok(IpNet::from(addr)),
        Err(e) => Err(SpecError::at(
            path,
            PolicyErrorKind::Cidr {
                value: text.to_owned(),
                reason: e.to_string(),
            },
        )),
    }
}

/// Parses a CIDR with exceptions, checking each exception lies inside it.
pub(crate) fn parse_cidr_peer(
    cidr: &str,
    except: &[String],
    cidr_path: &FieldPath,
    except_path: &FieldPath,
) -> Result<CidrPeer, SpecError> {
    let net = parse_cidr(cidr, cidr_path)?;
    let mut excepts = Vec::with_capacity(except.len());
    for (i, e) in except.iter().enumerate() {
        let path = except_path.index(i);
        let ex = parse_cidr(e, &path)?;
        if !net.contains(&ex) {
            return Err(SpecError::at(
                &path,
                PolicyErrorKind::ExceptOutsideCidr {
                    cidr: net.to_string(),
                    except: ex.to_string(),
                },
            ));
        }
        excepts.push(ex);
    }
    excepts.sort();
    excepts.dedup();
    Ok(CidrPeer {
        net,
        except: excepts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_names_follow_iana_rules() {
        assert!(is_port_name("http-8080"));
        assert!(is_port_name("dns"));
        assert!(!is_port_name("8080"));
        assert!(!is_port_name("Http"));
        assert!(!is_port_name("a--b"));
        assert!(!is_port_name("a-very-long-port-name"));
    }

    #[test]
    fn cidr_peer_rejects_outside_except() {
        let p = FieldPath::root("x");
        assert!(parse_cidr_peer("10.0.0.0/8", &["10.1.0.0/16".into()], &p, &p).is_ok());
        let err = parse_cidr_peer("10.0.0.0/8", &["11.0.0.0/16".into()], &p, &p).unwrap_err();
        assert!(matches!(
            err.kind,
            PolicyErrorKind::ExceptOutsideCidr { .. }
        ));
        assert_eq!(
            parse_cidr("10.1.2.3", &p).unwrap().to_string(),
            "10.1.2.3/32"
        );
        assert_eq!(
            parse_cidr("10.1.2.3/8", &p).unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert!(parse_cidr("10.1.2", &p).is_err());
    }
}
