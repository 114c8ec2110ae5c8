//! The one way a page is answered: render an askama template, or show the error as a page.

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

use crate::error::ApiError;

/// A rendered template as a response; a template that fails to render becomes a plain 500.
pub struct Page<T: Template>(pub T);

impl<T: Template> IntoResponse for Page<T> {
    fn into_response(self) -> Response {
        match self.0.render() {
            Ok(html) => Html(html).into_response(),
            Err(error) => {
                tracing::error!(%error, "template failed to render");
                (StatusCode::INTERNAL_SERVER_ERROR, "page failed to render").into_response()
            }
        }
    }
}

/// The error page: the same message the JSON API would give, inside the site's frame.
#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    nav: &'static str,
    status: u16,
    message: String,
}

/// A failed page request; answered as an HTML page with the error's status.
#[derive(Debug)]
pub struct PageError(pub ApiError);

impl<E: Into<ApiError>> From<E> for PageError {
    fn from(error: E) -> PageError {
        PageError(error.into())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let status = self.0.status();
        let page = ErrorPage {
            nav: "",
            status: status.as_u16(),
            message: self.0.message().to_owned(),
        };
        let mut response = Page(page).into_response();
        *response.status_mut() = status;
        response
    }
}

/// What every page handler returns.
pub type PageResult<T> = Result<Page<T>, PageError>;
