//! Error answers: a status and an [`ApiError`] body naming the field or line.

use super::types::ApiError;
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// A refused request.
#[derive(Debug)]
pub struct Refusal {
    /// The HTTP status.
    pub status: StatusCode,
    /// The body.
    pub body: ApiError,
}

impl Refusal {
    /// A refusal with `status` and a message.
    pub fn new(status: StatusCode, msg: impl Into<String>) -> Refusal {
        Refusal {
            status,
            body: ApiError {
                error: msg.into(),
                field: None,
                line: None,
            },
        }
    }

    /// 400 about request field `field`.
    pub fn field(field: impl Into<String>, msg: impl Into<String>) -> Refusal {
        let mut r = Refusal::new(StatusCode::BAD_REQUEST, msg);
        r.body.field = Some(field.into());
        r
    }

    /// 400 without a field.
    pub fn bad(msg: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::BAD_REQUEST, msg)
    }

    /// 404.
    pub fn not_found(msg: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::NOT_FOUND, msg)
    }

    /// 401.
    pub fn unauthorized(msg: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::UNAUTHORIZED, msg)
    }

    /// 403.
    pub fn forbidden(msg: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::FORBIDDEN, msg)
    }

    /// 429.
    pub fn too_many() -> Refusal {
        Refusal::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too many requests from this address; slow down",
        )
    }

    /// 500.
    pub fn internal(msg: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, msg)
    }

    /// A steering operation's error: unknown workloads are 404, the rest 400
    /// (the request could not be carried out as asked; the running state stays).
    pub fn steering(msg: String) -> Refusal {
        if msg.starts_with("no workload named") {
            Refusal::not_found(msg)
        } else {
            Refusal::bad(msg)
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(self.body)).into_response();
        match self.status {
            StatusCode::UNAUTHORIZED => {
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            StatusCode::TOO_MANY_REQUESTS => {
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        r
    }
}

/// Every handler's result.
pub type Answer<T> = Result<Json<T>, Refusal>;
