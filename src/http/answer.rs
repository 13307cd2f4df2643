//! Every answer is a JSON body with a `status` word (docs/reference.md §2).

use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use serde::Serialize;

use crate::event::{Kind, Warnings};

/// Seconds a client is asked to wait before retrying a 503.
pub const RETRY_AFTER_SECONDS: u32 = 5;

#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    #[serde(skip)]
    pub code: u16,
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<Kind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warnings: Option<Warnings>,
}

impl Answer {
    pub fn new(code: u16, status: &'static str) -> Self {
        Answer {
            code,
            status,
            kind: None,
            key: None,
            field: None,
            error: None,
            warnings: None,
        }
    }

    pub fn rejected(code: u16, error: impl Into<String>) -> Self {
        Answer {
            error: Some(error.into()),
            ..Answer::new(code, "rejected")
        }
    }

    pub fn into_response(self) -> HttpResponse {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::BAD_REQUEST);
        let mut builder = HttpResponse::build(code);
        if self.code == 503 {
            builder.insert_header(("Retry-After", RETRY_AFTER_SECONDS.to_string()));
        }
        builder.json(self)
    }
}
