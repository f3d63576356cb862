//! Request bodies and query strings, refused with the field named: axum's own
//! extractors answer in plain text, which a client cannot point at a field.

use super::error::Refusal;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

/// A JSON body; errors name the field (`options.mode: unknown variant ...`).
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = Refusal;

    async fn from_request(req: Request, state: &S) -> Result<Self, Refusal> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            let status = e.status();
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                Refusal::new(status, "the request body is larger than the API takes")
            } else {
                Refusal::new(status, e.body_text())
            }
        })?;
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
