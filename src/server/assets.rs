//! The editor's built assets (`web/dist`), embedded in the binary so `swapgraph serve` needs
//! nothing beside it.

use include_dir::{include_dir, Dir};
use warp::reply::Response;
use warp::Filter;

static DIST: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/web/dist");

/// `GET /` and `GET /{asset}`.
pub fn routes() -> warp::filters::BoxedFilter<(Response,)> {
    warp::get()
        .and(warp::path::tail())
        .and_then(|tail: warp::path::Tail| async move {
            let name = if tail.as_str().is_empty() {
                "index.html"
            } else {
                tail.as_str()
            };
            match DIST.get_file(name) {
                Some(file) => Ok(warp::http::Response::builder()
                    .header("content-type", content_type(name))
                    .body(file.contents().into())
                    .unwrap_or_default()),
                None => Err(warp::reject::not_found()),
            }
        })
        .boxed()
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        _ => "application/octet-stream",
    }
}
