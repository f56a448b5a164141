//! The administrator's console at `/ui/`: static files embedded in the binary (the page, its
//! style sheet and its JavaScript modules, no build step), served with a strict
//! Content-Security-Policy. The console calls the admin API (`/v1/…`) with the session cookie
//! of `POST /v1/session`; it is served only while the admin API is on.
//!
//! The page's language is chosen here from `Accept-Language` (Japanese or English, `<html
//! lang>`); the page's own switch overrides it in the reader's browser.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use std::sync::LazyLock;

/// No inline script or style, nothing from elsewhere, never framed.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! assets {
    ($($path:literal => $type:expr),* $(,)?) => {
        &[$(Asset {
            path: $path,
            content_type: $type,
            body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/", $path)),
        }),*]
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file of `ui/` (a test checks that none is left out).
static ASSETS: &[Asset] = assets![
    "index.html" => "text/html; charset=utf-8",
    "app.css" => "text/css; charset=utf-8",
    "icon.svg" => "image/svg+xml",
    "js/api.js" => JS,
    "js/cert.js" => JS,
    "js/certificate.js" => JS,
    "js/dashboard.js" => JS,
    "js/device.js" => JS,
    "js/devices.js" => JS,
    "js/dom.js" => JS,
    "js/enrollment.js" => JS,
    "js/i18n.js" => JS,
    "js/main.js" => JS,
    "js/refresh.js" => JS,
    "js/settings.js" => JS,
    "js/states.js" => JS,
];

/// The languages the console speaks; the first is the default.
const LANGUAGES: [&str; 2] = ["en", "ja"];

/// The page in each language, with its ETag.
static PAGES: LazyLock<Vec<(&'static str, Vec<u8>, String)>> = LazyLock::new(|| {
    let template = std::str::from_utf8(find("index.html").expect("index.html").body)
        .expect("index.html is UTF-8");
    LANGUAGES
        .iter()
        .map(|lang| {
            let page = template.replace("{{lang}}", lang).into_bytes();
            let tag = etag(&page);
            (*lang, page, tag)
        })
        .collect()
});

/// The ETag of each asset, computed once.
static TAGS: LazyLock<Vec<String>> =
    LazyLock::new(|| ASSETS.iter().map(|a| etag(a.body)).collect());

fn find(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

fn etag(body: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, body);
    format!("\"{}\"", hex::encode(&digest.as_ref()[..12]))
}

/// The console's language from an `Accept-Language` value: the supported language with the
/// highest weight (`q`), the earlier one on a tie; English when none is supported.
pub fn negotiate_language(accept: Option<&str>) -> &'static str {
    let mut best: Option<(&'static str, f32)> = None;
    for item in accept.unwrap_or("").split(',') {
        let mut parts = item.split(';');
        let tag = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .filter_map(|q| q.trim().parse::<f32>().ok())
            .next()
            .unwrap_or(1.0);
        // q=0 means "not this one"; a NaN ("q=nan") is not greater than 0 either.
        if q.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
            continue;
        }
        let primary = tag.split('-').next().unwrap_or("");
        let Some(lang) = LANGUAGES.iter().find(|l| **l == primary) else {
            continue;
        };
        if best.is_none_or(|(_, b)| q > b) {
            best = Some((lang, q));
        }
    }
    best.map_or(LANGUAGES[0], |(lang, _)| lang)
}

/// The `/ui` routes.
pub(super) fn routes() -> Router {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(page))
        .route("/ui/index.html", get(page))
        .route("/ui/{*path}", get(asset))
}

async fn page(headers: HeaderMap) -> Response {
    let accept = headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok());
    let lang = negotiate_language(accept);
    let (_, body, tag) = PAGES
        .iter()
        .find(|(l, _, _)| *l == lang)
        .expect("a page per language");
    let mut resp = answer(&headers, "text/html; charset=utf-8", body.as_slice(), tag);
    resp.headers_mut()
        .insert(header::VARY, HeaderValue::from_static("Accept-Language"));
    resp
}

async fn asset(
    axum::extract::Path(path): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    match ASSETS
        .iter()
        .position(|a| a.path == path && a.path != "index.html")
    {
        Some(i) => {
            let a = &ASSETS[i];
            answer(&headers, a.content_type, a.body, &TAGS[i])
        }
        None => {
            let mut resp = (StatusCode::NOT_FOUND, "not found\n").into_response();
            secure(resp.headers_mut());
            resp
        }
    }
}

/// The body, or 304 when the client's copy is current (`If-None-Match`).
fn answer(
    request: &HeaderMap,
    content_type: &'static str,
    body: &'static [u8],
    tag: &str,
) -> Response {
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"));
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        // Embedded (or made once): sent from where it lies, never copied.
        ([(header::CONTENT_TYPE, content_type)], body).into_response()
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(tag) {
        h.insert(header::ETAG, v);
    }
    // Revalidated at each load: a new binary's console is never mixed with an old one's.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    secure(h);
    resp
}

/// The headers every console answer carries.
fn secure(h: &mut HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_language_follows_accept_language() {
        assert_eq!(negotiate_language(None), "en");
        assert_eq!(negotiate_language(Some("")), "en");
        assert_eq!(negotiate_language(Some("ja")), "ja");
        assert_eq!(negotiate_language(Some("ja-JP,ja;q=0.9,en-US;q=0.8")), "ja");
        assert_eq!(negotiate_language(Some("en-US,en;q=0.9,ja;q=0.8")), "en");
        assert_eq!(negotiate_language(Some("fr-FR,ja;q=0.5")), "ja");
        assert_eq!(negotiate_language(Some("fr, de")), "en");
        assert_eq!(negotiate_language(Some("en;q=0.2, ja;q=0.7")), "ja");
        assert_eq!(negotiate_language(Some("ja;q=0, en;q=0.1")), "en");
        assert_eq!(negotiate_language(Some("JA-jp")), "ja");
        assert_eq!(negotiate_language(Some("ja;q=abc")), "ja");
    }

    #[test]
    fn every_file_of_the_console_is_embedded() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ui");
        let mut on_disk = Vec::new();
        let mut stack = vec![dir.clone()];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    let rel = path.strip_prefix(&dir).unwrap().to_string_lossy();
                    on_disk.push(rel.replace('\\', "/"));
                }
            }
        }
        on_disk.sort();
        let mut embedded: Vec<String> = ASSETS.iter().map(|a| a.path.to_owned()).collect();
        embedded.sort();
        assert_eq!(on_disk, embedded, "ui/ and the ASSETS table differ");
    }

    #[test]
    fn no_inline_script_or_style_in_the_page() {
        let page = std::str::from_utf8(find("index.html").unwrap().body).unwrap();
        assert!(!page.contains("<style"), "inline style");
        assert!(!page.contains(" style="), "inline style attribute");
        for script in page.split("<script").skip(1) {
            let (open, rest) = script.split_once('>').unwrap();
            assert!(open.contains("src="), "inline script: {open}");
            assert!(
                rest.trim_start().starts_with("</script>"),
                "inline script body"
            );
        }
        assert!(!page.contains(" on"), "an inline event handler");
        // Nor do the modules build HTML from text (everything goes through textContent).
        for a in ASSETS.iter().filter(|a| a.path.ends_with(".js")) {
            let text = std::str::from_utf8(a.body).unwrap();
            for banned in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "eval(",
                "new Function",
            ] {
                assert!(!text.contains(banned), "{} uses {banned}", a.path);
            }
        }
    }

    /// The keys of one dictionary (`const NAME = { "key": "…", … };`) in i18n.js.
    fn dictionary(text: &str, name: &str) -> std::collections::BTreeSet<String> {
        let start = text
            .find(&format!("const {name} = {{"))
            .unwrap_or_else(|| panic!("no {name} dictionary"));
        let body = &text[start..];
        let body = &body[..body.find("\n};").expect("the dictionary's end")];
        body.lines()
            .filter_map(|l| l.trim().strip_prefix('"'))
            .filter_map(|l| l.split_once("\":").map(|(k, _)| k.to_owned()))
            .collect()
    }

    #[test]
    fn japanese_and_english_have_the_same_words() {
        let text = std::str::from_utf8(find("js/i18n.js").unwrap().body).unwrap();
        let (en, ja) = (dictionary(text, "en"), dictionary(text, "ja"));
        assert!(en.len() > 100, "{} keys read", en.len());
        assert_eq!(
            en.symmetric_difference(&ja).collect::<Vec<_>>(),
            Vec::<&String>::new(),
            "keys in one language only"
        );
        // Every key the modules ask for (`t("…")`) is in the dictionaries.
        for a in ASSETS.iter().filter(|a| a.path.ends_with(".js")) {
            let js = std::str::from_utf8(a.body).unwrap();
            for (at, _) in js.match_indices("t(\"") {
                // `t(` itself, not the end of `get(` or `set(`.
                let before = js[..at].chars().next_back();
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.') {
                    continue;
                }
                let key = js[at + 3..].split('"').next().unwrap();
                assert!(en.contains(key), "{} asks for {key:?}", a.path);
            }
        }
    }

    async fn get(path: &str, headers: &[(&str, &str)]) -> Response {
        use tower::ServiceExt as _;
        let mut req = axum::http::Request::get(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        routes()
            .oneshot(req.body(axum::body::Body::empty()).unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn the_page_assets_and_their_headers() {
        let resp = get("/ui/", &[("accept-language", "ja-JP,ja;q=0.9")]).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let h = resp.headers().clone();
        assert_eq!(h[header::CONTENT_SECURITY_POLICY], CONTENT_SECURITY_POLICY);
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
        assert_eq!(h[header::VARY], "Accept-Language");
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        assert!(std::str::from_utf8(&body)
            .unwrap()
            .contains("<html lang=\"ja\">"));

        let resp = get("/ui/js/main.js", &[]).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], JS);
        let tag = resp.headers()[header::ETAG].to_str().unwrap().to_owned();
        let again = get("/ui/js/main.js", &[("if-none-match", &tag)]).await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);

        for missing in [
            "/ui/nope.js",
            "/ui/../Cargo.toml",
            "/ui/js/",
            "/ui/index.html/x",
        ] {
            let resp = get(missing, &[]).await;
            assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{missing}");
            assert!(resp.headers().contains_key(header::CONTENT_SECURITY_POLICY));
        }
        assert_eq!(
            get("/ui", &[]).await.status(),
            StatusCode::PERMANENT_REDIRECT
        );
    }
}
