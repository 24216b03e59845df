//! Public access tokens: HS256 JWTs signed with a secret key, as the Trigger.dev SDK makes them,
//! checked against the key's sealed copy, with scopes, expiry and one-time trigger tokens; and
//! the tokens kiln hands out with a trigger, a batch and a wait token.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{TestHost, guests};

fn now_secs() -> i64 {
    kiln::model::now_ms() / 1000
}

/// A token as the SDK signs it: the host's claims, the scopes, `exp` seconds from now.
fn sign(key: &str, claims: &Value, scopes: &[&str], exp: i64, extra: Value) -> String {
    let mut body = claims.clone();
    body["scopes"] = json!(scopes);
    body["iss"] = json!("https://id.trigger.dev");
    body["aud"] = json!("https://api.trigger.dev");
    body["iat"] = json!(now_secs());
    body["exp"] = json!(now_secs() + exp);
    if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
        b.extend(e);
    }
    let signed = format!(
        "{}.{}",
        B64.encode(br#"{"alg":"HS256"}"#),
        B64.encode(body.to_string())
    );
    let mac = kiln::keys::hmac_sha256(key.as_bytes(), signed.as_bytes());
    format!("{signed}.{}", B64.encode(mac))
}

fn host_key(dir: &std::path::Path) -> String {
    std::fs::read_to_string(dir.join(kiln::host::DEV_KEY_FILE))
        .unwrap()
        .trim()
        .to_owned()
}

async fn claims(host: &TestHost, key: &str) -> Value {
    let (status, claims) = host
        .request_as(key, Method::POST, "/api/v1/auth/jwt/claims", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{claims}");
    claims
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_reads_what_its_scopes_reach_until_it_expires_or_its_key_is_revoked() {
    let host = TestHost::start().await;
    host.deploy(guests::HELLO).await;
    let mine = host.trigger("echo", json!(1)).await;
    let other = host.trigger("echo", json!(2)).await;
    let claims = claims(&host, &host.key).await;
    assert_eq!(claims["pub"], true);
    assert!(claims["sub"].as_str().unwrap().starts_with("env_"));
    let get = |token: String, id: String| {
        let host = &host;
        async move {
            host.request_as(&token, Method::GET, &format!("/api/v3/runs/{id}"), None)
                .await
        }
    };
    let token = sign(
        &host.key,
        &claims,
        &[&format!("read:runs:{mine}")],
        60,
        json!({}),
    );
    assert_eq!(get(token.clone(), mine.clone()).await.0, StatusCode::OK);
    let (status, refused) = get(token.clone(), other.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        refused,
        json!({ "error": "Unauthorized", "code": "unauthorized", "param": "access_token", "type": "authorization" })
    );
    assert_eq!(
        get(token.clone(), "run_missing".into()).await.0,
        StatusCode::NOT_FOUND,
        "a missing run is a 404 before any scope"
    );
    // A token takes no secret-key route.
    let (status, error) = host
        .request_as(&token, Method::GET, "/api/v1/queues", None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        error["error"],
        "Public JWT API keys are not allowed for this request"
    );
    let expired = sign(&host.key, &claims, &["read:runs"], -60, json!({}));
    let (status, error) = get(expired, mine.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        error["error"].as_str().unwrap().contains("expired"),
        "{error}"
    );
    let not_signed_by_it = sign("tr_dev_not-the-key", &claims, &["read:runs"], 60, json!({}));
    assert_eq!(
        get(not_signed_by_it, mine.clone()).await.0,
        StatusCode::UNAUTHORIZED
    );
    // Tags and batches reach runs too, and `read:runs` any run.
    let tagged = host
        .trigger_with("echo", json!(3), json!({ "tags": ["env:staging"] }))
        .await;
    let by_tag = sign(
        &host.key,
        &claims,
        &["read:tags:env:staging"],
        60,
        json!({}),
    );
    assert_eq!(get(by_tag.clone(), tagged).await.0, StatusCode::OK);
    assert_eq!(get(by_tag, mine.clone()).await.0, StatusCode::FORBIDDEN);

    // Revoking the key ends its tokens.
    let (key_id, key) = host.new_environment_key("default", "dev").await;
    let theirs = crate::public_tokens::claims(&host, &key).await;
    assert_eq!(theirs["keyId"], key_id.as_str());
    let token = sign(&key, &theirs, &["read:runs"], 60, json!({}));
    assert_eq!(get(token.clone(), mine.clone()).await.0, StatusCode::OK);
    let (status, _) = host
        .request_as(
            &host.admin_key(),
            Method::POST,
            &format!("/api/v1/admin/keys/{key_id}/revoke"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(get(token, mine).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_batch_and_wait_token_answers_carry_a_token_for_what_they_made() {
    let host = TestHost::start().await;
    host.deploy(guests::HELLO).await;
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/tasks/echo/trigger", host.url))
        .bearer_auth(&host.key)
        .json(&json!({ "payload": 1 }))
        .send()
        .await
        .unwrap();
    let token = resp.headers()["x-trigger-jwt"].to_str().unwrap().to_owned();
    let claims: Value =
        serde_json::from_str(resp.headers()["x-trigger-jwt-claims"].to_str().unwrap()).unwrap();
    assert_eq!(claims["pub"], true);
    let id = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let payload: Value =
        serde_json::from_slice(&B64.decode(token.split('.').nth(1).unwrap()).unwrap()).unwrap();
    assert_eq!(
        payload["scopes"],
        json!([
            format!("read:runs:{id}"),
            format!("write:inputStreams:{id}")
        ])
    );
    let (status, _) = host
        .request_as(&token, Method::GET, &format!("/api/v3/runs/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);

    // A one-time trigger token makes one run; the token it is answered with reads that run.
    let otu = sign(
        &host.key,
        &claims,
        &["trigger:tasks:hello"],
        60,
        json!({ "otu": true }),
    );
    let trigger = |token: String, task: &'static str| {
        let host = &host;
        async move {
            host.request_as(
                &token,
                Method::POST,
                &format!("/api/v1/tasks/{task}/trigger"),
                Some(json!({ "payload": { "name": "t" } })),
            )
            .await
        }
    };
    assert_eq!(trigger(otu.clone(), "echo").await.0, StatusCode::FORBIDDEN);
    assert_eq!(trigger(otu.clone(), "hello").await.0, StatusCode::OK);
    let (status, again) = trigger(otu, "hello").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        again["error"],
        "Cannot trigger hello with a one-time use token as it has already been used."
    );

    // A wait token's own token completes it and no other.
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/waitpoints/tokens", host.url))
        .bearer_auth(&host.key)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let token = resp.headers()["x-trigger-jwt"].to_str().unwrap().to_owned();
    let waitpoint = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, other) = host.post("/api/v1/waitpoints/tokens", json!({})).await;
    let complete = |id: String| {
        let (host, token) = (&host, token.clone());
        async move {
            host.request_as(
                &token,
                Method::POST,
                &format!("/api/v1/waitpoints/tokens/{id}/complete"),
                Some(json!({ "data": 1 })),
            )
            .await
            .0
        }
    };
    assert_eq!(
        complete(other["id"].as_str().unwrap().to_owned()).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(complete(waitpoint).await, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_from_before_keys_were_sealed_checks_tokens_once_it_asks_for_claims() {
    let host = TestHost::start().await;
    host.deploy(guests::HELLO).await;
    let run = host.trigger("echo", json!(1)).await;
    let claims = claims(&host, &host.key).await;
    let dir = host.dir.clone();
    let temp = host.stop().await;
    // The key is kept sealed: the database alone does not show it.
    if let Some(place) = crate::support::StoredDb::holds_plain(&dir, host_key(&dir).as_bytes()) {
        panic!("{place} holds the key in plain text");
    }
    // What an older kiln left: the key's digest only.
    crate::support::StoredDb::open(&dir)
        .await
        .execute(
            "UPDATE api_keys SET sealed_nonce = NULL, sealed_key = NULL",
            &[],
        )
        .await;
    let host = TestHost::start_in(&dir, crate::support::Options::default()).await;
    let token = sign(&host.key, &claims, &["read:runs"], 600, json!({}));
    let path = format!("/api/v3/runs/{run}");
    let read = || host.request_as(&token, Method::GET, &path, None);
    assert_eq!(
        host.get(&format!("/api/v3/runs/{run}")).await.0,
        StatusCode::OK,
        "the key still works as a key"
    );
    let (status, error) = read().await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("before kiln kept keys sealed"),
        "{error}"
    );
    // Asking for claims (as auth.createPublicToken does) seals it; its tokens then check.
    crate::public_tokens::claims(&host, &host.key).await;
    assert_eq!(read().await.0, StatusCode::OK);
    host.stop().await;
    drop(temp);
}
