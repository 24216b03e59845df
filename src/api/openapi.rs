//! The API description served at `/api/openapi.json` (OpenAPI 3.1).
//!
//! Routes are declared once, with [`endpoints!`], which both adds them to the router and lists
//! them (method, path, auth, summary) for the document, so the two cannot drift. The document
//! names every operation, its path parameters and how it authenticates; request and response
//! bodies are described in the README's API tables, not (yet) as schemas here.

use serde_json::{Map, Value, json};

/// One route as the document shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub method: &'static str,
    pub path: &'static str,
    /// `none`, `key` (an environment's secret key) or `admin` (the host's admin key).
    pub auth: &'static str,
    pub summary: &'static str,
}

/// Adds each route to the router and lists it: `METHOD "path" [auth] "summary" => method_router`.
macro_rules! endpoints {
    ($router:expr; $( $method:ident $path:literal [$auth:ident] $summary:literal => $route:expr ),* $(,)?) => {{
        let router = $router;
        $( let router = router.route($path, $route); )*
        let endpoints = vec![
            $( $crate::api::openapi::Endpoint {
                method: stringify!($method),
                path: $path,
                auth: stringify!($auth),
                summary: $summary,
            } ),*
        ];
        (router, endpoints)
    }};
}
pub(crate) use endpoints;

/// The OpenAPI document of these routes.
pub fn document(endpoints: &[Endpoint]) -> Value {
    let mut paths = Map::new();
    for e in endpoints {
        let parameters: Vec<Value> = e
            .path
            .split('/')
            .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| {
                json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } })
            })
            .collect();
        let security = match e.auth {
            "key" => json!([{ "secretKey": [] }]),
            "admin" => json!([{ "adminKey": [] }]),
            _ => json!([]),
        };
        let operation = json!({
            "summary": e.summary,
            "operationId": format!("{} {}", e.method, e.path),
            "parameters": parameters,
            "security": security,
            "responses": {
                "default": {
                    "description": "JSON; errors are `{\"error\": \"…\"}` with a 4xx or 5xx status",
                },
            },
        });
        let item = paths
            .entry(e.path.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(methods) = item {
            methods.insert(e.method.to_ascii_lowercase(), operation);
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "kiln",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "kiln's API: Trigger.dev's management API where kiln implements it, plus deployments, admin and realtime endpoints.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "secretKey": { "type": "http", "scheme": "bearer", "description": "An environment's secret key (`tr_<env>_…`)" },
                "adminKey": { "type": "http", "scheme": "bearer", "description": "The host's admin key" },
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_of_a_path_share_its_item_and_parameters_come_from_the_path() {
        let doc = document(&[
            Endpoint {
                method: "GET",
                path: "/a/{id}",
                auth: "key",
                summary: "get",
            },
            Endpoint {
                method: "PUT",
                path: "/a/{id}",
                auth: "admin",
                summary: "put",
            },
        ]);
        let item = &doc["paths"]["/a/{id}"];
        assert_eq!(item["get"]["parameters"][0]["name"], "id");
        assert_eq!(item["put"]["security"][0]["adminKey"], json!([]));
    }
}
