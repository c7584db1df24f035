//! Label selectors: `matchLabels` and `matchExpressions`, parsed from policy YAML and matched
//! against canonical label sets.
//!
//! Keys may carry a source prefix (`k8s:app`, `any:app`, `reserved:host`); without one they
//! match a label from any source, as in Cilium. An empty selector matches every label set.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::labels::{LabelSet, LabelSource};

/// A Kubernetes-style label selector as written in YAML.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelectorSpec {
    /// Exact key/value matches, ANDed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_labels: Option<BTreeMap<String, String>>,
    /// Set-based requirements, ANDed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_expressions: Option<Vec<ExpressionSpec>>,
}

/// One `matchExpressions` entry as written in YAML.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpressionSpec {
    /// The label key.
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist` (any letter case).
    pub operator: String,
    /// Values for `In`/`NotIn`.
    #[serde(default)]
    pub values: Option<Vec<String>>,
}

/// A selector operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operator {
    /// The label is present with one of the values.
    In,
    /// The label is absent or has none of the values.
    NotIn,
    /// The label is present.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

/// One compiled requirement.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Requirement {
    /// Required source of the label, `None` for any source.
    pub source: Option<LabelSource>,
    /// The key without source prefix.
    pub key: String,
    /// The operator.
    pub operator: Operator,
    /// Sorted, deduplicated values.
    pub values: Vec<String>,
}

impl Requirement {
    /// `key == value` (matchLabels form).
    pub fn equals(source: Option<LabelSource>, key: &str, value: &str) -> Self {
        Requirement {
            source,
            key: key.to_owned(),
            operator: Operator::In,
            values: vec![value.to_owned()],
        }
    }

    /// Whether a label set satisfies this requirement.
    pub fn matches(&self, labels: &LabelSet) -> bool {
        let mut found = labels
            .with_key(&self.key)
            .filter(|l| self.source.is_none_or(|s| s == l.source));
        match self.operator {
            Operator::Exists => found.next().is_some(),
            Operator::DoesNotExist => found.next().is_none(),
            Operator::In => found.any(|l| self.values.binary_search(&l.value).is_ok()),
            Operator::NotIn => !found.any(|l| self.values.binary_search(&l.value).is_ok()),
        }
    }
}

/// A compiled selector: requirements ANDed. No requirement matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

/// Why a selector is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// The operator is not one of In, NotIn, Exists, DoesNotExist.
    #[error("unknown operator {0:?} (expected In, NotIn, Exists or DoesNotExist)")]
    UnknownOperator(String),
    /// In/NotIn need at least one value.
    #[error("operator {0:?} needs at least one value")]
    MissingValues(String),
    /// Exists/DoesNotExist take no values.
    #[error("operator {0:?} takes no values")]
    UnexpectedValues(String),
    /// A key is empty.
    #[error("empty label key")]
    EmptyKey,
}

/// Splits `k8s:app` into (Some(K8s), "app"); `any:` and unprefixed keys give `None`.
pub fn parse_key(raw: &str) -> (Option<LabelSource>, &str) {
    if let Some((prefix, rest)) = raw.split_once(':')
        && let Some(source) = LabelSource::parse(prefix)
    {
        return (source, rest);
    }
    (None, raw)
}

impl Selector {
    /// The selector that matches every label set.
    pub fn all() -> Self {
        Selector::default()
    }

    /// A selector from requirements (sorted for a canonical form).
    pub fn from_requirements(mut requirements: Vec<Requirement>) -> Self {
        requirements.sort();
        requirements.dedup();
        Selector { requirements }
    }

    /// Compiles a YAML selector. Errors carry the position of the offending expression
    /// (`matchExpressions[i]`) so callers can build a field path.
    pub fn parse(spec: &LabelSelectorSpec) -> Result<Self, (String, SelectorError)> {
        let mut requirements = Vec::new();
        for (key, value) in spec.match_labels.iter().flatten() {
            let (source, key_name) = parse_key(key);
            if key_name.is_empty() {
                return Err((format!("matchLabels.{key}"), SelectorError::EmptyKey));
            }
            requirements.push(Requirement::equals(source, key_name, value));
        }
        for (i, expr) in spec.match_expressions.iter().flatten().enumerate() {
            let at = |e| (format!("matchExpressions[{i}]"), e);
            let (source, key_name) = parse_key(&expr.key);
            if key_name.is_empty() {
                return Err(at(SelectorError::EmptyKey));
            }
            let operator = match expr.operator.to_ascii_lowercase().as_str() {
                "in" => Operator::In,
                "notin" => Operator::NotIn,
                "exists" => Operator::Exists,
                "doesnotexist" => Operator::DoesNotExist,
                _ => return Err(at(SelectorError::UnknownOperator(expr.operator.clone()))),
            };
            let mut values = expr.values.clone().unwrap_or_default();
            match operator {
                Operator::In | Operator::NotIn if values.is_empty() => {
                    return Err(at(SelectorError::MissingValues(expr.operator.clone())));
                }
                Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                    return Err(at(SelectorError::UnexpectedValues(expr.operator.clone())));
                }
                _ => {}
            }
            values.sort();
            values.dedup();
            requirements.push(Requirement {
                source,
                key: key_name.to_owned(),
                operator,
                values,
            });
        }
        Ok(Selector::from_requirements(requirements))
    }

    /// Whether every requirement holds for `labels`.
    pub fn matches(&self, labels: &LabelSet) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Whether the selector matches everything.
    pub fn is_wildcard(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether any requirement is about `key` (any source).
    pub fn mentions_key(&self, key: &str) -> bool {
        self.requirements.iter().any(|r| r.key == key)
    }

    /// This selector with one more requirement ANDed in.
    pub fn and(&self, requirement: Requirement) -> Selector {
        let mut requirements = self.requirements.clone();
        requirements.push(requirement);
        Selector::from_requirements(requirements)
    }

    /// The requirements.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.requirements.is_empty() {
            return f.write_str("{}");
        }
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let key = match r.source {
                Some(s) => format!("{}:{}", s.as_str(), r.key),
                None => r.key.clone(),
            };
            match r.operator {
                Operator::In if r.values.len() == 1 => write!(f, "{key}={}", r.values[0])?,
                Operator::In => write!(f, "{key} in ({})", r.values.join("|"))?,
                Operator::NotIn => write!(f, "{key} notin ({})", r.values.join("|"))?,
                Operator::Exists => write!(f, "{key}")?,
                Operator::DoesNotExist => write!(f, "!{key}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::Label;

    fn labels(pairs: &[(&str, &str)]) -> LabelSet {
        LabelSet::new(
            pairs
                .iter()
                .map(|(k, v)| Label::new(LabelSource::K8s, *k, *v)),
        )
    }

    fn sel(yaml: &str) -> Selector {
        Selector::parse(&serde_yaml::from_str(yaml).unwrap()).unwrap()
    }

    #[test]
    fn match_labels_and_expressions_are_anded() {
        let s = sel(
            "matchLabels: {app: web}\nmatchExpressions: [{key: tier, operator: In, values: [a, b]}]",
        );
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "b")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "c")])));
        assert!(!s.matches(&labels(&[("tier", "a")])));
    }

    #[test]
    fn not_in_and_does_not_exist_match_absent_keys() {
        let s = sel("matchExpressions: [{key: env, operator: NotIn, values: [prod]}]");
        assert!(s.matches(&labels(&[("app", "x")])));
        assert!(s.matches(&labels(&[("env", "dev")])));
        assert!(!s.matches(&labels(&[("env", "prod")])));
        let s = sel("matchExpressions: [{key: env, operator: DoesNotExist}]");
        assert!(s.matches(&labels(&[])));
        assert!(!s.matches(&labels(&[("env", "")])));
    }

    #[test]
    fn operators_accept_any_case_and_sources_are_honoured() {
        let s = sel("matchExpressions: [{key: 'k8s:app', operator: in, values: [web]}]");
        assert!(s.matches(&labels(&[("app", "web")])));
        let s = sel("matchLabels: {'reserved:host': ''}");
        assert!(!s.matches(&labels(&[("host", "")])));
        let host = LabelSet::new([Label::new(LabelSource::Reserved, "host", "")]);
        assert!(s.matches(&host));
        assert!(sel("matchLabels: {'any:app': web}").matches(&labels(&[("app", "web")])));
    }

    #[test]
    fn empty_selector_matches_everything() {
        assert!(sel("{}").matches(&labels(&[])));
        assert!(sel("{}").is_wildcard());
    }

    #[test]
    fn invalid_expressions_are_rejected_with_position() {
        let bad = |yaml: &str| Selector::parse(&serde_yaml::from_str(yaml).unwrap()).unwrap_err();
        assert_eq!(
            bad("matchExpressions: [{key: a, operator: Exists}, {key: b, operator: Maybe}]"),
            (
                "matchExpressions[1]".to_owned(),
                SelectorError::UnknownOperator("Maybe".into())
            )
        );
        assert_eq!(
            bad("matchExpressions: [{key: a, operator: In}]").1,
            SelectorError::MissingValues("In".into())
        );
        assert_eq!(
            bad("matchExpressions: [{key: a, operator: Exists, values: [x]}]").1,
            SelectorError::UnexpectedValues("Exists".into())
        );
    }
}
