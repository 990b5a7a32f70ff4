//! The web dashboard (`query-api/dashboard/`, built by `npm ci && npm run build`) as
//! static files at `/`: a file of the build when one matches, else `index.html` so the
//! single-page app's own routes (`/devices`, `/billing`, …) load on a reload. Paths of
//! the API (`/api/…`, `/graphql…`, `/health`, `/metrics`) and missing build assets
//! (`/assets/…`) are never answered with the page: they stay 404.

use std::path::{Path, PathBuf};

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower::ServiceExt as _;
use tower_http::services::{ServeDir, ServeFile};

/// Where `npm run build` puts the dashboard in this source tree.
pub const DEFAULT_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/dashboard/dist");

/// Prefixes that belong to the API: an unknown path under them is a 404, not the page.
const API_PREFIXES: [&str; 5] = ["/api/", "/graphql", "/graphiql", "/health", "/metrics"];

/// `router` with the dashboard in `dir` as its fallback for every path it does not route.
pub fn serve(router: Router, dir: &Path) -> Router {
    let dir = dir.to_path_buf();
    router.fallback(move |request: Request| static_file(dir.clone(), request))
}

async fn static_file(dir: PathBuf, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    if API_PREFIXES.iter().any(|prefix| path.starts_with(prefix)) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let index = dir.join("index.html");
    if !index.is_file() {
        return (
            StatusCode::NOT_FOUND,
            "The dashboard is not built: run `npm ci && npm run build` in query-api/dashboard \
             (or point --dashboard-dir at a build).\n",
        )
            .into_response();
    }
    let is_asset = path.starts_with("/assets/");
    let files = ServeDir::new(&dir).append_index_html_on_directories(true);
    let mut response = if is_asset {
        files.oneshot(request).await.into_response()
    } else {
        files.fallback(ServeFile::new(&index)).oneshot(request).await.into_response()
    };
    // Vite names the bundle's files by their content hash; the page itself must be
    // fetched again so a new build is picked up.
    let cache = if is_asset && response.status().is_success() {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    response
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::routing::get;

    use super::*;

    fn build() -> tempdir::Dir {
        let dir = tempdir::Dir::new();
        std::fs::create_dir_all(dir.path().join("assets")).unwrap();
        std::fs::write(dir.path().join("index.html"), "<!doctype html><title>dash</title>").unwrap();
        std::fs::write(dir.path().join("assets/app-1234.js"), "console.log(1)").unwrap();
        dir
    }

    async fn get_path(router: Router, path: &str) -> (StatusCode, String, Option<String>) {
        let response = router.oneshot(Request::get(path).body(Body::empty()).unwrap()).await.unwrap();
        let status = response.status();
        let cache = response.headers().get(header::CACHE_CONTROL).map(|v| v.to_str().unwrap().to_owned());
        let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, String::from_utf8_lossy(&body).into_owned(), cache)
    }

    fn app(dir: &Path) -> Router {
        serve(Router::new().route("/health", get(|| async { "ok" })), dir)
    }

    #[tokio::test]
    async fn files_of_the_build_and_the_page_for_app_routes() {
        let dir = build();
        let (status, body, cache) = get_path(app(dir.path()), "/").await;
        assert_eq!((status, body.contains("<title>dash</title>")), (StatusCode::OK, true));
        assert_eq!(cache.as_deref(), Some("no-cache"));
        let (status, body, cache) = get_path(app(dir.path()), "/assets/app-1234.js").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "console.log(1)"));
        assert_eq!(cache.as_deref(), Some("public, max-age=31536000, immutable"));
        let (status, body, _) = get_path(app(dir.path()), "/billing/MAC000002").await;
        assert_eq!((status, body.contains("<title>dash</title>")), (StatusCode::OK, true));
    }

    #[tokio::test]
    async fn api_paths_and_missing_assets_stay_404() {
        let dir = build();
        let (status, body, _) = get_path(app(dir.path()), "/health").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"), "routes win over the files");
        for path in ["/api/nope", "/graphql/x", "/metricsx", "/assets/gone.js"] {
            let (status, body, _) = get_path(app(dir.path()), path).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
            assert!(!body.contains("<title>"), "{path} is not answered with the page");
        }
    }

    #[tokio::test]
    async fn an_unbuilt_dashboard_says_how_to_build_it() {
        let dir = tempdir::Dir::new();
        let (status, body, _) = get_path(app(dir.path()), "/").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.contains("npm run build"), "{body}");
    }

    /// A directory of its own under the system temp dir, removed on drop.
    mod tempdir {
        use std::path::{Path, PathBuf};

        pub struct Dir(PathBuf);

        impl Dir {
            pub fn new() -> Self {
                static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let path =
                    std::env::temp_dir().join(format!("query-api-dashboard-{}-{n}", std::process::id()));
                std::fs::create_dir_all(&path).unwrap();
                Self(path)
            }

            pub fn path(&self) -> &Path {
                &self.0
            }
        }

        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }
}
