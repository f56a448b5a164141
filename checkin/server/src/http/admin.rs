//! The admin API (`/v1/…`, JSON). The bearer key was checked by the router. Errors are
//! `{"error": "…"}` with a 4xx/5xx status.
//!
//! | route | request | answer |
//! |---|---|---|
//! | `GET /v1/devices[?state=S]` | | `[{"udid", "state", "push_latency_ms", device fields…}]` |
//! | `GET /v1/devices/{udid}` | | one device object; 404 if unknown |
//! | `GET /v1/devices/{udid}/commands` | | `{"queued": [{"command_uuid", "request_type", "queued_at", "not_now_at"}], "results": [{"command_uuid", "request_type", "status", "error_chain", "at", "raw"}]}` |
//! | `GET /v1/devices.csv[?state=S]` | | `text/csv`: Device name, Model, OS version, Serial number, Collected at, Enrolled at, State, Last seen |
//! | `POST /v1/refresh` | `{"all": true}` or `{"udids": […]}` | 202 `{"requested", "pushing", "enqueued", "already_queued", "command_uuid", "skipped": {reason: n}, "pushed_udids"?}` |
//! | `POST /v1/commands` | `{"udids": […], "request_type": "…", "params": {…}?, "push": true?, "command_uuid": "…"?, "expires_in": "24h"? \| "expires_at": "<RFC 3339>"?}` — `params` values may be `{"$data": "<base64>"}` or `{"$date": "<RFC 3339>"}`; or a plist body (the command dictionary) with `?udid=…&udid=…[&push=false]`. `ClearPasscode` gets the device's stored UnlockToken (one device per command) | 201 `{"command_uuid", "queued", "unknown", "pushing"}` |
//! | `DELETE /v1/commands/{uuid}` | | `{"command_uuid", "cancelled": n}` (taken off n queues); 404 if unknown |
//! | `DELETE /v1/devices/{udid}` | | `{"deleted": udid}`; 404 if unknown |
//! | `GET /v1/connectivity` | | `{"states": {state: n}, "latency_ms": {"p50", "p99", "max", "count"}, "total", "unreachable_after_s", "generated_at"}` |
//! | `DELETE /v1/devices?all=true&confirm=TOPIC` | | `{"deleted": n, "topic"}`; 409 if TOPIC is not the one in use |
//! | `GET /v1/pushcert` | | `{"subject", "topic", "apsp", "serial", "issuer", "not_before", "not_after", "days_left", "expired", "environment", "state", "warnings", "apple_id", "pending_requests"}`; 404 "no push certificate registered" |
//! | `PUT /v1/pushcert` | Apple's certificate alone (PEM or DER), or PEM certificate then PEM key | the new details; 422 if no issued request matches a certificate sent alone; 409 on a topic change (E320) while devices are enrolled or a renewal that does not expire later; 400 if expired, not valid yet, not MDM, or the key does not match |
//! | `DELETE /v1/pushcert` | | `{"deleted": true}`; 409 while devices are enrolled |
//! | `PUT /v1/pushcert/memo` | `{"apple_id": "…"}` (empty clears) | the details with the memo |
//! | `POST /v1/pushcert/csr` | `{"email"?, "common_name"?, "country"?}` or nothing | 201 `{"id", "file_name", "vendor_signed", "request"}` |
//! | `GET /v1/pushcert/csr` | | the last pending request's file (`Content-Disposition: attachment; filename="PushCertificate_<VENDOR>_<YYYYMMDDHHMM>.csr"`) |
//! | `DELETE /v1/pushcert/csr/{id}` | | `{"withdrawn": id}`: the pending key is destroyed |
//! | `GET /v1/pushcert/requests` | | `[{"id", "file_name", "created_at", "vendor_signed", "subject", "public_key_sha256"}]` |
//! | `GET /v1/pushcert/history` | | `[{"serial", "topic", "subject", "not_after", "registered_at", "replaced_at", "apple_id"}]` |

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::Value;

use super::body::{self, read_limited, Body};
use super::error::ApiError;
use crate::pushcert::request::Subject;
use crate::service::views::parse_state;
use crate::service::{CommandRequest, RefreshTarget, Service};
use magicpush_mdm::json_values::dict_from_json;
use magicpush_store::connectivity::ConnState;

pub(super) async fn handle<B>(
    service: &Arc<Service>,
    method: &Method,
    path: &str,
    req: Request<B>,
    limit: usize,
) -> Response<Body>
where
    B: hyper::body::Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    match route(service, method, path, req, limit).await {
        Ok(resp) => resp,
        Err(err) => body::json_error(&err),
    }
}

async fn route<B>(
    service: &Arc<Service>,
    method: &Method,
    path: &str,
    req: Request<B>,
    limit: usize,
) -> Result<Response<Body>, ApiError>
where
    B: hyper::body::Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let only = |allowed: &Method| {
        if method == allowed {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{method} not allowed on {path}; use {allowed}"),
            ))
        }
    };
    match path {
        "/v1/devices" if *method == Method::DELETE => {
            let confirm = delete_all_query(req.uri().query())?;
            let deleted = service.delete_all_devices(&confirm).await?;
            ok_json(serde_json::json!({"deleted": deleted, "topic": confirm}))
        }
        "/v1/devices" => {
            only(&Method::GET)?;
            let filter = state_filter(req.uri().query())?;
            let json = service.devices_json(filter).await?;
            Ok(body::streamed(StatusCode::OK, "application/json", json))
        }
        "/v1/devices.csv" => {
            only(&Method::GET)?;
            let filter = state_filter(req.uri().query())?;
            let csv = service.devices_csv(filter).await?;
            let mut resp = body::streamed(StatusCode::OK, "text/csv; charset=utf-8", csv);
            resp.headers_mut().insert(
                http::header::CONTENT_DISPOSITION,
                http::HeaderValue::from_static("attachment; filename=\"devices.csv\""),
            );
            Ok(resp)
        }
        p if p.starts_with("/v1/devices/") => {
            if *method != Method::GET && *method != Method::DELETE {
                return Err(ApiError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    format!("{method} not allowed on {path}; use GET or DELETE"),
                ));
            }
            let rest = &p["/v1/devices/".len()..];
            let (udid, commands) = match rest.strip_suffix("/commands") {
                Some(udid) => (udid, true),
                None => (rest, false),
            };
            if udid.is_empty() || udid.contains('/') {
                return Err(ApiError::not_found(format!("no route for {p}")));
            }
            let udid = percent_decode(udid)
                .ok_or_else(|| ApiError::bad_request("malformed percent-encoding in UDID"))?;
            match (method, commands) {
                (&Method::DELETE, false) => {
                    service.delete_device(&udid).await?;
                    ok_json(serde_json::json!({"deleted": udid}))
                }
                (&Method::DELETE, true) => Err(ApiError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "DELETE a command with DELETE /v1/commands/{uuid}",
                )),
                (_, true) => ok_json(service.device_commands_json(&udid).await?),
                (_, false) => ok_json(service.device_json(&udid).await?),
            }
        }
        "/v1/refresh" => {
            only(&Method::POST)?;
            let request: RefreshRequest = read_json(req, limit).await?;
            let target = match (request.all, request.udids) {
                (true, None) => RefreshTarget::All,
                (false, Some(udids)) if !udids.is_empty() => RefreshTarget::Devices(udids),
                (false, Some(_)) => return Err(ApiError::bad_request("udids is empty")),
                (true, Some(_)) => {
                    return Err(ApiError::bad_request(
                        "give either \"all\": true or \"udids\", not both",
                    ))
                }
                (false, None) => {
                    return Err(ApiError::bad_request(
                        "give {\"all\": true} or {\"udids\": [...]}",
                    ))
                }
            };
            let summary = service.refresh(target).await?;
            Ok(body::json(
                StatusCode::ACCEPTED,
                &serde_json::to_value(&summary).unwrap_or_default(),
            ))
        }
        p if p.starts_with("/v1/commands/") => {
            only(&Method::DELETE)?;
            let uuid = percent_decode(&p["/v1/commands/".len()..])
                .filter(|u| !u.is_empty() && !u.contains('/'))
                .ok_or_else(|| ApiError::not_found(format!("no route for {p}")))?;
            let cancelled = service.cancel_command(&uuid).await?;
            ok_json(serde_json::json!({"command_uuid": uuid, "cancelled": cancelled}))
        }
        "/v1/commands" => {
            only(&Method::POST)?;
            let request = if is_plist(req.headers()) {
                plist_command(req, limit).await?
            } else {
                json_command(read_json(req, limit).await?)?
            };
            let summary = service.enqueue_command(request).await?;
            Ok(body::json(
                StatusCode::CREATED,
                &serde_json::to_value(&summary).unwrap_or_default(),
            ))
        }
        "/v1/connectivity" => {
            only(&Method::GET)?;
            ok_json(service.connectivity_json().await?)
        }
        "/v1/pushcert" => match *method {
            Method::GET => ok_json(to_value(service.pushcert()?)),
            Method::PUT => {
                let (parts, incoming) = req.into_parts();
                let pem = read_limited(&parts.headers, incoming, limit).await?;
                ok_json(to_value(service.replace_pushcert(&pem).await?))
            }
            Method::DELETE => {
                service.delete_pushcert().await?;
                ok_json(serde_json::json!({"deleted": true}))
            }
            _ => Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{method} not allowed on {path}; use GET, PUT or DELETE"),
            )),
        },
        "/v1/pushcert/csr" => match *method {
            Method::POST => {
                let subject: CsrRequest = read_json_or_empty(req, limit).await?;
                let issued = service
                    .issue_pushcert_request(Subject {
                        email: subject.email,
                        common_name: subject.common_name,
                        country: subject.country,
                    })
                    .await?;
                Ok(body::json(StatusCode::CREATED, &to_value(issued)))
            }
            Method::GET => {
                let latest = service.latest_pushcert_request()?;
                let mut resp = body::with_body(
                    StatusCode::OK,
                    "application/pkcs10",
                    latest.request.into_bytes(),
                );
                let disposition = format!("attachment; filename=\"{}\"", latest.file_name);
                if let Ok(v) = http::HeaderValue::from_str(&disposition) {
                    resp.headers_mut()
                        .insert(http::header::CONTENT_DISPOSITION, v);
                }
                Ok(resp)
            }
            _ => Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{method} not allowed on {path}; use POST or GET"),
            )),
        },
        p if p.starts_with("/v1/pushcert/csr/") => {
            only(&Method::DELETE)?;
            let id = &p["/v1/pushcert/csr/".len()..];
            service.withdraw_pushcert_request(id).await?;
            ok_json(serde_json::json!({"withdrawn": id}))
        }
        "/v1/pushcert/requests" => {
            only(&Method::GET)?;
            ok_json(to_value(service.pushcert_requests()))
        }
        "/v1/pushcert/history" => {
            only(&Method::GET)?;
            ok_json(to_value(service.pushcert_history()))
        }
        "/v1/pushcert/memo" => {
            only(&Method::PUT)?;
            let memo: MemoRequest = read_json(req, limit).await?;
            ok_json(to_value(service.set_pushcert_memo(memo.apple_id).await?))
        }
        _ => Err(ApiError::not_found(format!("no route for {path}"))),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CsrRequest {
    email: Option<String>,
    common_name: Option<String>,
    country: Option<String>,
}

/// `?all=true&confirm=<topic>` — both required, so that no typo deletes a fleet.
fn delete_all_query(query: Option<&str>) -> Result<String, ApiError> {
    let (mut all, mut confirm) = (false, None);
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v)
            .ok_or_else(|| ApiError::bad_request(format!("malformed percent-encoding in {k}")))?;
        match k {
            "all" => all = v == "true",
            "confirm" => confirm = Some(v),
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown parameter {other:?}; DELETE /v1/devices takes all=true&confirm=<topic>"
                )))
            }
        }
    }
    match (all, confirm) {
        (true, Some(topic)) if !topic.is_empty() => Ok(topic),
        _ => Err(ApiError::bad_request(
            "deleting every device needs ?all=true&confirm=<the current push topic>; to delete one device use DELETE /v1/devices/{udid}",
        )),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RefreshRequest {
    #[serde(default)]
    all: bool,
    udids: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandsRequest {
    udids: Vec<String>,
    request_type: String,
    params: Option<Value>,
    push: Option<bool>,
    command_uuid: Option<String>,
    /// e.g. `"24h"`: the command expires that long after it is queued.
    expires_in: Option<String>,
    /// RFC 3339: the command expires then.
    expires_at: Option<String>,
}

/// `expires_in` (a duration from now) or `expires_at` (RFC 3339), not both.
fn expiry(
    expires_in: Option<&str>,
    expires_at: Option<&str>,
) -> Result<Option<time::OffsetDateTime>, ApiError> {
    match (expires_in, expires_at) {
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(ApiError::bad_request(
            "give expires_in or expires_at, not both",
        )),
        (Some(d), None) => {
            let d = crate::config::parse_duration(d)
                .map_err(|e| ApiError::bad_request(format!("expires_in: {e}")))?;
            Ok(Some(time::OffsetDateTime::now_utc() + d))
        }
        (None, Some(t)) => {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                .map(Some)
                .map_err(|e| {
                    ApiError::bad_request(format!("expires_at is not RFC 3339 ({t:?}): {e}"))
                })
        }
    }
}

/// A JSON command: typed plist values in `params` (see [`magicpush_mdm::json_values`]).
fn json_command(request: CommandsRequest) -> Result<CommandRequest, ApiError> {
    let params = match request.params {
        None | Some(Value::Null) => plist::Dictionary::new(),
        Some(Value::Object(map)) => {
            dict_from_json(map).map_err(|why| ApiError::bad_request(format!("params: {why}")))?
        }
        Some(_) => return Err(ApiError::bad_request("params must be a JSON object")),
    };
    Ok(CommandRequest {
        expires_at: expiry(request.expires_in.as_deref(), request.expires_at.as_deref())?,
        udids: request.udids,
        request_type: request.request_type,
        params,
        push: request.push.unwrap_or(true),
        uuid: request.command_uuid,
    })
}

/// A body that is a plist (`Content-Type` application/x-plist, application/xml, text/xml or
/// MDM's own), not JSON.
fn is_plist(headers: &http::HeaderMap) -> bool {
    let Some(ct) = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let ct = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    matches!(
        ct.as_str(),
        "application/x-plist"
            | "application/xml"
            | "text/xml"
            | "application/x-apple-aspen-mdm"
            | "application/octet-stream"
    )
}

/// A plist command body (the dictionary a device receives), for the devices in the query:
/// `?udid=A&udid=B[&push=false]`.
async fn plist_command<B>(req: Request<B>, limit: usize) -> Result<CommandRequest, ApiError>
where
    B: hyper::body::Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let mut udids = Vec::new();
    let mut push = true;
    let mut expires_in = None;
    for pair in req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v)
            .ok_or_else(|| ApiError::bad_request(format!("malformed percent-encoding in {k}")))?;
        match k {
            "udid" => udids.push(v),
            "expires_in" => expires_in = Some(v),
            "push" => {
                push = match v.as_str() {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => return Err(ApiError::bad_request("push is true or false")),
                }
            }
            _ => {
                return Err(ApiError::bad_request(format!(
                "unknown query parameter {k:?} (a plist command takes ?udid=…&udid=…[&push=false])"
            )))
            }
        }
    }
    let (parts, incoming) = req.into_parts();
    let bytes = read_limited(&parts.headers, incoming, limit).await?;
    let command = magicpush_mdm::Command::from_plist(&bytes)
        .map_err(|e| ApiError::bad_request(format!("command plist: {e}")))?;
    Ok(CommandRequest {
        expires_at: expiry(expires_in.as_deref(), None)?,
        udids,
        request_type: command.request_type,
        params: command.params,
        push,
        uuid: Some(command.uuid),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MemoRequest {
    apple_id: String,
}

/// `?state=<name>` on the device list and export.
fn state_filter(query: Option<&str>) -> Result<Option<ConnState>, ApiError> {
    let Some(query) = query else {
        return Ok(None);
    };
    let mut filter = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "state" => {
                filter = Some(parse_state(value).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "unknown state {value:?}; one of: {}",
                        ConnState::ALL.map(|s| s.as_str()).join(", ")
                    ))
                })?);
            }
            _ => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {key:?}"
                )))
            }
        }
    }
    Ok(filter)
}

fn to_value<T: serde::Serialize>(v: T) -> Value {
    serde_json::to_value(v).unwrap_or_default()
}

fn ok_json(value: Value) -> Result<Response<Body>, ApiError> {
    Ok(body::json(StatusCode::OK, &value))
}

async fn read_json<T, B>(req: Request<B>, limit: usize) -> Result<T, ApiError>
where
    T: serde::de::DeserializeOwned,
    B: hyper::body::Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let (parts, incoming) = req.into_parts();
    let bytes = read_limited(&parts.headers, incoming, limit).await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// [`read_json`], with an empty body read as `T::default()`.
async fn read_json_or_empty<T, B>(req: Request<B>, limit: usize) -> Result<T, ApiError>
where
    T: serde::de::DeserializeOwned + Default,
    B: hyper::body::Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let (parts, incoming) = req.into_parts();
    let bytes = read_limited(&parts.headers, incoming, limit).await?;
    if bytes.trim_ascii().is_empty() {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// Decodes `%XX` escapes; `None` on a malformed escape or non-UTF-8 result.
fn percent_decode(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_owned());
    }
    String::from_utf8(crate::identity::header::percent_decode(s.as_bytes())?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("abc").as_deref(), Some("abc"));
        assert_eq!(percent_decode("a%2Fb").as_deref(), Some("a/b"));
        assert_eq!(percent_decode("a%2"), None);
        assert_eq!(percent_decode("a%zz"), None);
    }

    #[test]
    fn json_params_become_plist() {
        let v: Value = serde_json::json!({"Queries": ["A", "B"], "Flag": true, "N": 3, "X": 1.5});
        let Value::Object(map) = v else {
            unreachable!()
        };
        let d = dict_from_json(map).unwrap();
        assert_eq!(d.get("N").and_then(|v| v.as_signed_integer()), Some(3));
        assert_eq!(d.get("Flag").and_then(|v| v.as_boolean()), Some(true));
        assert_eq!(
            d.get("Queries").and_then(|v| v.as_array()).map(Vec::len),
            Some(2)
        );
        let Value::Object(bad) = serde_json::json!({"K": null}) else {
            unreachable!()
        };
        assert!(dict_from_json(bad).is_err());
    }
}
