//! Request extractors whose every rejection is an envelope error naming the
//! field at fault: JSON bodies, path and query parameters, the
//! Idempotency-Key header, the request context and the caller (the
//! authenticated user).

use super::envelope::{new_trace_id, RequestCtx};
use super::error::{code, Error, Result};
use axum::body::Bytes;
use axum::extract::path::ErrorKind;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;
use std::time::Instant;

/// Checks a value after deserialization; errors name the field.
pub trait Validate {
    fn validate(&self) -> Result<()>;
}

/// A path or query id: an integer of at least 1.
pub fn positive_id(field: &str, value: i64) -> Result<i64> {
    if value >= 1 {
        Ok(value)
    } else {
        Err(Error::invalid(
            "path",
            field,
            value,
            "must be a positive integer id",
        ))
    }
}

// ---------------------------------------------------------------- body

/// A JSON body: `Content-Type: application/json` (415 otherwise), at most the
/// body limit (413), well-formed (400 `MALFORMED_JSON`) and of the right
/// shape, unknown fields refused (400 naming the field).
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self> {
        check_json_content_type(req.headers())?;
        let bytes = Bytes::from_request(req, state).await.map_err(|rej| {
            if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Error::refused(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    code::PAYLOAD_TOO_LARGE,
                    format!(
                        "the request body is larger than {} bytes",
                        super::BODY_LIMIT
                    ),
                )
                .with_target("body")
            } else {
                Error::refused(
                    StatusCode::BAD_REQUEST,
                    code::ILLEGAL_ARGUMENT,
                    format!("cannot read the request body: {rej}"),
                )
                .with_target("body")
            }
        })?;
        // Every body of this API is an object; serde would also read a
        // struct from an array, by position.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
            return Err(Error::invalid(
                "body",
                "body",
                serde_json::Value::Null,
                "must be a JSON object, not an array",
            ));
        }
        parse_json(&bytes).map(ApiJson)
    }
}

pub(crate) fn check_json_content_type(headers: &axum::http::HeaderMap) -> Result<()> {
    let unsupported = |msg: String| {
        Error::refused(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code::UNSUPPORTED_MEDIA_TYPE,
            msg,
        )
        .with_target("Content-Type")
    };
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Err(unsupported(
            "Content-Type is missing; send application/json".into(),
        ));
    };
    let text = value.to_str().unwrap_or_default();
    let essence = text
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let json = essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"));
    if json {
        Ok(())
    } else {
        Err(unsupported(format!(
            "Content-Type {text:?} is not supported; send application/json"
        )))
    }
}

/// Parses a JSON body, naming the field of a shape error.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::refused(
            StatusCode::BAD_REQUEST,
            code::MALFORMED_JSON,
            "the request body is empty; send a JSON object",
        )
        .with_target("body"));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => {
                let field = field_name(&path, &inner.to_string());
                Error::invalid("body", &field, serde_json::Value::Null, inner.to_string())
            }
            _ => malformed(&inner),
        }
    })?;
    de.end().map_err(|e| malformed(&e))?;
    Ok(value)
}

fn malformed(e: &serde_json::Error) -> Error {
    Error::refused(
        StatusCode::BAD_REQUEST,
        code::MALFORMED_JSON,
        format!("the request body is not valid JSON: {e}"),
    )
    .with_target("body")
}

/// The full name of the field an error is about: its path, plus the field a
/// "missing field `x`" or "unknown field `x`" message names.
fn field_name(path: &str, message: &str) -> String {
    let named = ["missing field `", "unknown field `", "duplicate field `"]
        .iter()
        .find_map(|p| {
            let rest = &message[message.find(p)? + p.len()..];
            Some(&rest[..rest.find('`')?])
        });
    let path = if path == "." { "" } else { path };
    match named {
        // serde_path_to_error already put an unknown field on the path.
        Some(n) if path == n || path.ends_with(&format!(".{n}")) => path.to_string(),
        Some(n) if path.is_empty() => n.to_string(),
        Some(n) => format!("{path}.{n}"),
        None if path.is_empty() => "body".to_string(),
        None => path.to_string(),
    }
}

// ---------------------------------------------------------------- path

/// Path parameters; a non-numeric or out-of-range id is a 400 naming it.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Validate + Send,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self> {
        let Path(value) = Path::<T>::from_request_parts(parts, state)
            .await
            .map_err(path_error)?;
        value.validate()?;
        Ok(ApiPath(value))
    }
}

fn path_error(rej: PathRejection) -> Error {
    match rej {
        PathRejection::FailedToDeserializePathParams(e) => match e.into_kind() {
            ErrorKind::ParseErrorAtKey {
                key,
                value,
                expected_type,
            } => Error::invalid(
                "path",
                &key,
                value,
                format!("cannot be parsed as {}", friendly_type(expected_type)),
            ),
            ErrorKind::DeserializeError {
                key,
                value,
                message,
            } => Error::invalid("path", &key, value, message),
            ErrorKind::InvalidUtf8InPathParam { key } => {
                Error::invalid("path", &key, serde_json::Value::Null, "is not valid UTF-8")
            }
            ErrorKind::ParseErrorAtIndex {
                index,
                value,
                expected_type,
            } => Error::invalid(
                "path",
                &format!("#{index}"),
                value,
                format!("cannot be parsed as {}", friendly_type(expected_type)),
            ),
            ErrorKind::ParseError {
                value,
                expected_type,
            } => Error::invalid(
                "path",
                "path",
                value,
                format!("cannot be parsed as {}", friendly_type(expected_type)),
            ),
            other => Error::Internal(format!("path parameters do not fit the route: {other}")),
        },
        other => Error::Internal(format!("path parameters do not fit the route: {other}")),
    }
}

fn friendly_type(t: &str) -> &str {
    match t {
        "i64" | "i32" | "u64" | "u32" => "an integer (ids are 1 to 9223372036854775807)",
        "bool" => "a boolean (true or false)",
        other => other,
    }
}

// ---------------------------------------------------------------- query

/// Query parameters; a bad value is a 400 naming the parameter. Unknown
/// parameters are ignored, as OCP does.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self> {
        parse_query(parts.uri.query().unwrap_or_default()).map(ApiQuery)
    }
}

/// Parses a query string, naming the parameter of an error.
pub fn parse_query<T: DeserializeOwned>(query: &str) -> Result<T> {
    let de = serde_urlencoded::Deserializer::new(url::form_urlencoded::parse(query.as_bytes()));
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        let field = field_name(&path, &message);
        let rejected = url::form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| *k == field)
            .map(|(_, v)| serde_json::Value::String(v.into_owned()))
            .unwrap_or(serde_json::Value::Null);
        Error::invalid("query", &field, rejected, message)
    })
}

// ---------------------------------------------------------------- headers

/// The `Idempotency-Key` header of an operation: at most 128 visible ASCII
/// characters. A repeated key returns the first task.
#[derive(Debug, Clone, Default)]
pub struct IdempotencyKey(pub Option<String>);

pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";
pub const IDEMPOTENCY_KEY_MAX: usize = 128;

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self> {
        let Some(value) = parts.headers.get(IDEMPOTENCY_HEADER) else {
            return Ok(IdempotencyKey(None));
        };
        let invalid = |rejected: serde_json::Value, msg: &str| {
            Error::invalid("header", "Idempotency-Key", rejected, msg)
        };
        let text = value
            .to_str()
            .map_err(|_| invalid(serde_json::Value::Null, "must be visible ASCII characters"))?;
        if text.is_empty() || text.len() > IDEMPOTENCY_KEY_MAX {
            return Err(invalid(text.into(), "must be 1 to 128 characters long"));
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid(
                text.into(),
                "must be visible ASCII characters without spaces",
            ));
        }
        Ok(IdempotencyKey(Some(text.to_string())))
    }
}

// ---------------------------------------------------------------- context

impl<S: Send + Sync> FromRequestParts<S> for RequestCtx {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self> {
        Ok(parts
            .extensions
            .get::<RequestCtx>()
            .cloned()
            .unwrap_or_else(|| RequestCtx {
                trace_id: new_trace_id(),
                started: Instant::now(),
            }))
    }
}

/// Who is calling: the authenticated user, put into the request's
/// extensions by the auth middleware that wraps every API route (see
/// `auth::middleware`). Taken as an extractor; without an authenticated
/// user it is a 401.
pub use crate::auth::Principal as Caller;

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    #[allow(dead_code)]
    struct Inner {
        sql_port: i64,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        name: String,
        items: Vec<Inner>,
    }

    fn target(e: Error) -> String {
        match e {
            Error::Refused(r) => r.target.unwrap_or_default(),
            other => panic!("not a refusal: {other}"),
        }
    }

    #[test]
    fn json_errors_name_the_field() {
        let e = parse_json::<Outer>(br#"{"name":"a","items":[{"sqlPort":"x"}]}"#).unwrap_err();
        assert_eq!(target(e), "items[0].sqlPort");
        let e = parse_json::<Outer>(br#"{"name":"a","items":[],"bogus":1}"#).unwrap_err();
        assert_eq!(target(e), "bogus");
        let e = parse_json::<Outer>(br#"{"name":"a","items":[{"sqlPort":1,"x":2}]}"#).unwrap_err();
        assert_eq!(target(e), "items[0].x");
        let e = parse_json::<Outer>(br#"{"items":[]}"#).unwrap_err();
        assert_eq!(target(e), "name");
        let e = parse_json::<Outer>(br#"{"name":"#).unwrap_err();
        assert_eq!(target(e), "body");
        let e = parse_json::<Outer>(br#"{"name":"a","items":[]} trailing"#).unwrap_err();
        assert_eq!(target(e), "body");
        assert!(parse_json::<Outer>(b"  ").is_err());
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Q {
        page: Option<i64>,
        force: Option<bool>,
    }

    #[test]
    fn query_errors_name_the_parameter() {
        let e = parse_query::<Q>("page=abc").unwrap_err();
        assert_eq!(target(e), "page");
        let e = parse_query::<Q>("force=yes").unwrap_err();
        assert_eq!(target(e), "force");
        assert!(parse_query::<Q>("page=2&other=1").is_ok());
    }

    #[test]
    fn ids_must_be_positive() {
        assert!(positive_id("id", 1).is_ok());
        assert!(positive_id("id", 0).is_err());
        assert!(positive_id("id", -4).is_err());
    }
}
