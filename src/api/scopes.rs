//! What a public access token's scopes allow, as Trigger.dev reads them (`rbac.ts`
//! `parseScope`/`buildJwtAbility`): `action:type[:id]` split on the first two colons only (an id
//! may hold colons: `read:tags:env:staging` is the tag `env:staging`), or a bare `admin`.
//!
//! A scope grants `action` on a resource when its action is that one (or `*`), its type is the
//! resource's (or `all`), and it has no id or the resource's id. A route names the resources a
//! request touches; any one granted is enough.

/// One scope of a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Scope {
    action: String,
    kind: String,
    id: Option<String>,
}

/// A resource a request touches: a type (`runs`, `tasks`, `tags`, `batch`, `waitpoints`) and an
/// id, or the type itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Resource<'a> {
    pub(super) kind: &'a str,
    pub(super) id: Option<&'a str>,
}

impl<'a> Resource<'a> {
    pub(super) fn of(kind: &'a str, id: &'a str) -> Resource<'a> {
        Resource { kind, id: Some(id) }
    }

    /// The whole type (granted only by a scope without an id).
    pub(super) fn all(kind: &'a str) -> Resource<'a> {
        Resource { kind, id: None }
    }
}

impl Scope {
    /// A scope's text; `None` for one kiln cannot read (it grants nothing).
    pub(super) fn parse(text: &str) -> Option<Scope> {
        if text == "admin" {
            return Some(Scope {
                action: "*".into(),
                kind: "all".into(),
                id: None,
            });
        }
        let mut parts = text.splitn(3, ':');
        let action = parts.next().filter(|a| !a.is_empty())?;
        let kind = parts.next().filter(|k| !k.is_empty())?;
        let id = parts.next().filter(|i| !i.is_empty());
        Some(Scope {
            action: action.to_owned(),
            kind: kind.to_owned(),
            id: id.map(str::to_owned),
        })
    }

    fn grants(&self, action: &str, resource: Resource<'_>) -> bool {
        (self.action == action || self.action == "*")
            && (self.kind == resource.kind || self.kind == "all")
            && match &self.id {
                None => true,
                Some(id) => resource.id == Some(id.as_str()),
            }
    }
}

/// Whether `scopes` grant `action` on any of `resources`.
pub(super) fn allows(scopes: &[Scope], action: &str, resources: &[Resource<'_>]) -> bool {
    resources
        .iter()
        .any(|r| scopes.iter().any(|s| s.grants(action, *r)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scopes(texts: &[&str]) -> Vec<Scope> {
        texts.iter().filter_map(|t| Scope::parse(t)).collect()
    }

    #[test]
    fn a_scope_with_an_id_grants_that_resource_and_one_without_grants_the_type() {
        let s = scopes(&["read:runs:run_1", "read:tags:env:staging"]);
        assert!(allows(&s, "read", &[Resource::of("runs", "run_1")]));
        assert!(!allows(&s, "read", &[Resource::of("runs", "run_2")]));
        assert!(
            !allows(&s, "read", &[Resource::all("runs")]),
            "an id grants no type"
        );
        assert!(!allows(&s, "write", &[Resource::of("runs", "run_1")]));
        assert!(allows(
            &s,
            "read",
            &[
                Resource::of("runs", "run_2"),
                Resource::of("tags", "env:staging")
            ]
        ));
        let any_run = scopes(&["read:runs"]);
        assert!(allows(&any_run, "read", &[Resource::of("runs", "run_9")]));
        assert!(allows(&any_run, "read", &[Resource::all("runs")]));
    }

    #[test]
    fn admin_wildcards_and_unreadable_scopes() {
        assert!(allows(
            &scopes(&["admin"]),
            "trigger",
            &[Resource::of("tasks", "t")]
        ));
        assert!(allows(
            &scopes(&["*:all"]),
            "write",
            &[Resource::all("waitpoints")]
        ));
        assert!(allows(
            &scopes(&["trigger:tasks:hello"]),
            "trigger",
            &[Resource::of("tasks", "hello")]
        ));
        assert!(!allows(
            &scopes(&["trigger:tasks:hello"]),
            "trigger",
            &[Resource::of("tasks", "echo")]
        ));
        assert_eq!(Scope::parse("read"), None);
        assert_eq!(Scope::parse(":runs"), None);
        assert!(!allows(&[], "read", &[Resource::all("runs")]));
    }
}
