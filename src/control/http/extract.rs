//! Request bodies and query strings, refused with the field named: axum's own
//! extractors answer in plain text, which a client cannot point at a field.

use super::error::Refusal;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

/// The body's bytes, a body too large refused as such.
async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, Refusal> {
    Bytes::from_request(req, state).await.map_err(|e| {
        let status = e.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            Refusal::new(status, "the request body is larger than the API takes")
        } else {
            Refusal::new(status, e.body_text())
        }
    })
}

/// A JSON body; errors name the field (`options.mode: unknown variant ...`).
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = Refusal;

    async fn from_request(req: Request, state: &S) -> Result<Self, Refusal> {
        let bytes = body_bytes(req, state).await?;
        let de = &mut serde_json::Deserializer::from_slice(&bytes);
        serde_path_to_error::deserialize(de).map(Body).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let msg = format!("bad JSON body: {inner}");
            if path == "." || path.is_empty() {
                Refusal::bad(msg)
            } else {
                Refusal::field(path, msg)
            }
        })
    }
}

/// Query parameters; errors name the parameter.
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Refusal> {
        let q = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(q.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(Params)
            .map_err(|e| {
                let path = e.path().to_string();
                let msg = format!("bad query: {}", e.into_inner());
                if path == "." || path.is_empty() {
                    Refusal::bad(msg)
                } else {
                    Refusal::field(path, msg)
                }
            })
    }
}

/// A body of text (a rule set as typed), UTF-8.
pub struct Text(pub String);

impl<S: Send + Sync> FromRequest<S> for Text {
    type Rejection = Refusal;

    async fn from_request(req: Request, state: &S) -> Result<Self, Refusal> {
        let bytes = body_bytes(req, state).await?;
        String::from_utf8(bytes.to_vec())
            .map(Text)
            .map_err(|e| Refusal::bad(format!("the body is not UTF-8 text: {e}")))
    }
}
