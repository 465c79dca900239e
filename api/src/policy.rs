//! Access policies in IAM's JSON grammar: statements that Allow or Deny principals (access
//! key ids, named groups, everyone) actions (`kinesis:Get*`) on resources (ARNs, or stream
//! and table names; `*` and `?` wildcards). The broker's policy file and the resource
//! policies of PutResourcePolicy are both read here; the broker combines their decisions
//! (an explicit Deny anywhere wins).

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// The longest policy document PutResourcePolicy takes, in characters (IAM's limit for
/// resource-based policies).
pub const MAX_RESOURCE_POLICY_CHARS: usize = 20_480;

/// A principal's name for a group: `group:<name>` in a statement's Principal.
pub const GROUP_PREFIX: &str = "group:";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    statements: Vec<Statement>,
    /// Named groups of access key ids, from the document's `Groups` member.
    groups: BTreeMap<String, BTreeSet<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Statement {
    sid: Option<String>,
    allow: bool,
    /// None: every principal (`"*"`).
    principals: Option<Vec<String>>,
    actions: Vec<String>,
    resources: Vec<String>,
}

/// Who asks: the access key id of the request's signature (None when requests are not
/// authenticated) and the groups it belongs to where its key is configured.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub access_key_id: Option<&'a str>,
    pub groups: &'a [String],
    pub account: &'a str,
}

/// What is asked for: a resource's ARN (`*` for account-wide operations), and the stream
/// or table name that name patterns are matched against.
#[derive(Debug, Clone, Copy)]
pub struct Resource<'a> {
    pub arn: &'a str,
    pub name: Option<&'a str>,
}

/// One policy's answer for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// An explicit Deny, with the statement's Sid when it has one.
    Deny(Option<String>),
    /// No statement applies.
    NotAllowed,
}

impl Policy {
    /// Parse and check a policy document; the error names the statement and the member.
    pub fn parse(text: &str) -> Result<Policy, String> {
        let doc: Value = serde_json::from_str(text).map_err(|e| format!("the policy is not valid JSON: {e}"))?;
        let Value::Object(doc) = doc else { return Err("the policy must be a JSON object".into()) };
        for key in doc.keys() {
            if !matches!(key.as_str(), "Version" | "Id" | "Statement" | "Groups") {
                return Err(format!("unsupported policy member {key:?} (Version, Id, Statement and Groups are read)"));
            }
        }
        let statements = match doc.get("Statement") {
            Some(Value::Array(list)) => list.iter().enumerate().map(|(i, s)| Statement::parse(i, s)).collect(),
            Some(one @ Value::Object(_)) => Statement::parse(0, one).map(|s| vec![s]),
            _ => Err("the policy needs a Statement (an object or a list of them)".into()),
        }?;
        let mut groups = BTreeMap::new();
        if let Some(value) = doc.get("Groups") {
            let Value::Object(map) = value else {
                return Err("Groups must map group names to lists of access key ids".into());
            };
            for (name, members) in map {
                let members = strings(members).map_err(|e| format!("Groups.{name}: {e}"))?;
                groups.insert(name.clone(), members.into_iter().collect());
            }
        }
        Ok(Policy { statements, groups })
    }

    /// An empty policy: allows nothing.
    pub fn none() -> Policy {
        Policy { statements: Vec::new(), groups: BTreeMap::new() }
    }

    pub fn decide(&self, subject: &Subject<'_>, action: &str, resource: &Resource<'_>) -> Decision {
        let mut allowed = false;
        for s in &self.statements {
            let applies = self.names(s, subject)
                && s.actions.iter().any(|a| glob(&a.to_ascii_lowercase(), &action.to_ascii_lowercase()))
                && s.resources.iter().any(|r| resource_matches(r, resource));
            if !applies {
                continue;
            }
            if !s.allow {
                return Decision::Deny(s.sid.clone());
            }
            allowed = true;
        }
        if allowed { Decision::Allow } else { Decision::NotAllowed }
    }

    /// Whether a statement's Principal names the subject.
    fn names(&self, s: &Statement, subject: &Subject<'_>) -> bool {
        let Some(principals) = &s.principals else { return true };
        let account_root = format!("arn:aws:iam::{}:root", subject.account);
        principals.iter().any(|p| match (p.strip_prefix(GROUP_PREFIX), subject.access_key_id) {
            (_, None) => false,
            (Some(group), Some(key)) => {
                subject.groups.iter().any(|g| g == group) || self.groups.get(group).is_some_and(|m| m.contains(key))
            }
            (None, Some(key)) => p == key || *p == account_root || p == subject.account,
        })
    }
}

impl Statement {
    fn parse(index: usize, value: &Value) -> Result<Statement, String> {
        let at = |member: &str| format!("Statement[{index}].{member}");
        let Value::Object(s) = value else { return Err(format!("Statement[{index}] must be an object")) };
        for key in s.keys() {
            if !matches!(key.as_str(), "Sid" | "Effect" | "Principal" | "Action" | "Resource") {
                // Refused rather than ignored: an ignored Condition would widen an Allow.
                return Err(format!("{}: not supported (Sid, Effect, Principal, Action and Resource are)", at(key)));
            }
        }
        let allow = match s.get("Effect").and_then(Value::as_str) {
            Some("Allow") => true,
            Some("Deny") => false,
            _ => return Err(format!("{} must be \"Allow\" or \"Deny\"", at("Effect"))),
        };
        let principals = match s.get("Principal") {
            Some(Value::String(star)) if star == "*" => None,
            Some(Value::Object(p)) if p.len() == 1 && p.contains_key("AWS") => {
                let names = strings(&p["AWS"]).map_err(|e| format!("{}: {e}", at("Principal.AWS")))?;
                if names.iter().any(|n| n == "*") { None } else { Some(names) }
            }
            _ => {
                return Err(format!(
                    "{} must be \"*\" or {{\"AWS\": <access key ids, group:<name>, arn:aws:iam::<account>:root>}}",
                    at("Principal")
                ));
            }
        };
        let actions = s
            .get("Action")
            .ok_or_else(|| format!("{} is required", at("Action")))
            .and_then(|v| strings(v).map_err(|e| format!("{}: {e}", at("Action"))))?;
        if let Some(bad) = actions.iter().find(|a| *a != "*" && !a.contains(':')) {
            return Err(format!("{}: {bad:?} must be <service>:<operation>, e.g. kinesis:PutRecord", at("Action")));
        }
        let resources = s
            .get("Resource")
            .ok_or_else(|| format!("{} is required", at("Resource")))
            .and_then(|v| strings(v).map_err(|e| format!("{}: {e}", at("Resource"))))?;
        let sid = s.get("Sid").and_then(Value::as_str).map(str::to_string);
        Ok(Statement { sid, allow, principals, actions, resources })
    }
}

/// A string or a non-empty list of strings, as IAM writes one or many.
fn strings(value: &Value) -> Result<Vec<String>, String> {
    let list = match value {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map(str::to_string).ok_or("every entry must be a string"))
            .collect::<Result<_, _>>()?,
        _ => return Err("must be a string or a list of strings".into()),
    };
    if list.is_empty() {
        return Err("must name at least one".into());
    }
    Ok(list)
}

/// An ARN pattern is matched against the ARN; anything else against the stream or table name.
fn resource_matches(pattern: &str, resource: &Resource<'_>) -> bool {
    if pattern == "*" {
        return true;
    }
    if pattern.starts_with("arn:") {
        return glob(pattern, resource.arn);
    }
    resource.name.is_some_and(|name| glob(pattern, name))
}

/// `*` matches any run of characters, `?` any one character (IAM's wildcards).
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was, and the text position it is matched up to.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            // Let the last `*` take one more character.
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORDERS: &str = "arn:aws:kinesis:us-east-1:123456789012:stream/orders";

    fn subject<'a>(key: &'a str, groups: &'a [String]) -> Subject<'a> {
        Subject { access_key_id: Some(key), groups, account: "123456789012" }
    }

    fn orders() -> Resource<'static> {
        Resource { arn: ORDERS, name: Some("orders") }
    }

    #[test]
    fn globs_take_stars_and_question_marks() {
        assert!(glob("kinesis:get*", "kinesis:getrecords"));
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(glob("a?c", "abc"));
        assert!(!glob("a?c", "ac"));
        assert!(!glob("kinesis:put*", "kinesis:getrecords"));
        assert!(glob("arn:aws:kinesis:*:*:stream/ord*", ORDERS));
        assert!(!glob("arn:aws:kinesis:*:*:stream/ord", ORDERS));
    }

    #[test]
    fn a_writer_may_put_only_and_a_deny_wins() {
        let policy = Policy::parse(
            r#"{"Version": "2012-10-17", "Groups": {"writers": ["AKIDW"]}, "Statement": [
                {"Effect": "Allow", "Principal": {"AWS": "group:writers"}, "Action": "kinesis:PutRecord*", "Resource": "orders"},
                {"Effect": "Allow", "Principal": "*", "Action": ["kinesis:Describe*"], "Resource": "*"},
                {"Sid": "noDeletes", "Effect": "Deny", "Principal": {"AWS": "*"}, "Action": "kinesis:DeleteStream", "Resource": "*"}
            ]}"#,
        )
        .unwrap();
        let w = subject("AKIDW", &[]);
        assert_eq!(policy.decide(&w, "kinesis:PutRecords", &orders()), Decision::Allow);
        assert_eq!(policy.decide(&w, "Kinesis:putrecord", &orders()), Decision::Allow, "actions ignore case");
        assert_eq!(policy.decide(&w, "kinesis:GetRecords", &orders()), Decision::NotAllowed);
        let other = Resource { arn: "arn:aws:kinesis:us-east-1:123456789012:stream/payments", name: Some("payments") };
        assert_eq!(policy.decide(&w, "kinesis:PutRecords", &other), Decision::NotAllowed);
        assert_eq!(policy.decide(&w, "kinesis:DescribeStream", &other), Decision::Allow);
        assert_eq!(policy.decide(&w, "kinesis:DeleteStream", &orders()), Decision::Deny(Some("noDeletes".into())));
        let stranger = subject("AKIDX", &[]);
        assert_eq!(policy.decide(&stranger, "kinesis:PutRecords", &orders()), Decision::NotAllowed);
        let by_directory = ["writers".to_string()];
        assert_eq!(policy.decide(&subject("AKIDY", &by_directory), "kinesis:PutRecord", &orders()), Decision::Allow);
        let anonymous = Subject { access_key_id: None, groups: &[], account: "123456789012" };
        assert_eq!(policy.decide(&anonymous, "kinesis:DescribeStream", &orders()), Decision::Allow, "* is everyone");
        assert_eq!(policy.decide(&anonymous, "kinesis:PutRecord", &orders()), Decision::NotAllowed);
    }

    #[test]
    fn the_account_root_is_every_key_of_the_account() {
        let policy = Policy::parse(
            r#"{"Statement": {"Effect": "Allow", "Principal": {"AWS": ["arn:aws:iam::123456789012:root"]}, "Action": "*", "Resource": "arn:aws:kinesis:us-east-1:123456789012:stream/orders"}}"#,
        )
        .unwrap();
        assert_eq!(policy.decide(&subject("AKIDQ", &[]), "kinesis:GetRecords", &orders()), Decision::Allow);
        let elsewhere = Subject { access_key_id: Some("AKIDQ"), groups: &[], account: "999999999999" };
        assert_eq!(policy.decide(&elsewhere, "kinesis:GetRecords", &orders()), Decision::NotAllowed);
    }

    #[test]
    fn malformed_policies_name_the_statement_and_member() {
        let cases = [
            ("[]", "JSON object"),
            ("{}", "needs a Statement"),
            (
                r#"{"Statement": [{"Effect": "Maybe", "Principal": "*", "Action": "*", "Resource": "*"}]}"#,
                "Statement[0].Effect",
            ),
            (r#"{"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}"#, "Statement[0].Principal"),
            (
                r#"{"Statement": [{"Effect": "Allow", "Principal": "*", "Resource": "*"}]}"#,
                "Statement[0].Action is required",
            ),
            (
                r#"{"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "PutRecord", "Resource": "*"}]}"#,
                "<service>:<operation>",
            ),
            (
                r#"{"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": []}]}"#,
                "Statement[0].Resource: must name",
            ),
            (
                r#"{"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*", "Condition": {}}]}"#,
                "Statement[0].Condition: not supported",
            ),
            (r#"{"Statement": [], "Groups": {"g": 3}}"#, "Groups.g"),
            ("{nope", "not valid JSON"),
        ];
        for (text, expected) in cases {
            let e = Policy::parse(text).unwrap_err();
            assert!(e.contains(expected), "{text}: {e}");
        }
    }
}
