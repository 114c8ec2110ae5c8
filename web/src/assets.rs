//! Static files (CSS, JavaScript) compiled into the binary, so the UI works offline with no CDN.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Every embedded file: name, content type, bytes.
const FILES: [(&str, &str, &str); 3] = [
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("../static/app.css"),
    ),
    (
        "trace.js",
        "text/javascript; charset=utf-8",
        include_str!("../static/trace.js"),
    ),
    (
        "sql.js",
        "text/javascript; charset=utf-8",
        include_str!("../static/sql.js"),
    ),
];

/// `GET /static/{file}`: one embedded file, cacheable for an hour.
pub async fn file(Path(name): Path<String>) -> Response {
    match FILES.iter().find(|(file, _, _)| *file == name) {
        Some((_, content_type, body)) => (
            [
                (header::CONTENT_TYPE, *content_type),
                (header::CACHE_CONTROL, "public, max-age=3600"),
            ],
            *body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such file").into_response(),
    }
}
