//! Builds the HTTP application and binds its listener, so tests start the same
//! application on port 0.

use crate::auth::LoginLimiter;
use crate::backtests::BacktestsApi;
use crate::changes::ChangeWatcher;
use crate::config::ApiConfig;
use crate::incidents::IncidentsApi;
use crate::machines::MachinesApi;
use crate::rules::RulesApi;
use crate::session::{authenticate, SessionApi};
use crate::tokens::TokensApi;
use poem::listener::TcpAcceptor;
use poem::{
    get, handler, http::StatusCode, web::Data, EndpointExt, IntoResponse, Response, Route, Server,
};
use poem_openapi::OpenApiService;
use sqlx::MySqlPool;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

/// The OpenAPI service: every `#[OpenApi]` impl, one per tag.
pub type Api = OpenApiService<
    (
        IncidentsApi,
        MachinesApi,
        SessionApi,
        TokensApi,
        BacktestsApi,
        RulesApi,
    ),
    (),
>;

/// The OpenAPI service (also used to print the spec).
pub fn api_service(
    pool: MySqlPool,
    session: SessionApi,
    watcher: ChangeWatcher,
    rules: RulesApi,
) -> Api {
    OpenApiService::new(
        (
            IncidentsApi {
                pool: pool.clone(),
                watcher,
            },
            MachinesApi { pool: pool.clone() },
            session,
            TokensApi { pool: pool.clone() },
            BacktestsApi {
                pool,
                defaults: rules.defaults,
            },
            rules,
        ),
        "Resource Monitor API",
        env!("CARGO_PKG_VERSION"),
    )
    .server("/api")
}

#[handler]
fn metrics_endpoint(metrics: Data<&std::sync::Arc<crate::metrics::ApiMetrics>>) -> Response {
    Response::builder()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(metrics.render())
}

#[handler]
fn healthz() -> &'static str {
    "ok"
}

#[handler]
async fn readyz(pool: Data<&MySqlPool>) -> Response {
    match sqlx::query("SELECT 1").execute(*pool).await {
        Ok(_) => "ready".into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("database unavailable: {e}"),
        )
            .into_response(),
    }
}

/// All routes, behind the authentication middleware.
pub fn routes(
    pool: MySqlPool,
    config: &ApiConfig,
    watcher: ChangeWatcher,
    metrics: std::sync::Arc<crate::metrics::ApiMetrics>,
) -> impl poem::Endpoint {
    let session = SessionApi {
        pool: pool.clone(),
        policy: config.session,
        limiter: LoginLimiter::new(config.login_max_attempts, config.login_window),
    };
    let producer = config.kafka_brokers.as_deref().and_then(|brokers| {
        rdkafka::ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .create::<rdkafka::producer::FutureProducer>()
            .map_err(|e| tracing::error!(error = %e, "cannot create the Kafka producer; rule changes are unavailable"))
            .ok()
    });
    let rules = RulesApi {
        pool: pool.clone(),
        defaults: config.rules,
        producer,
        topic: config.machine_events_topic.clone(),
    };
    let api = api_service(pool.clone(), session.clone(), watcher, rules);
    let spec = api.spec_endpoint();
    let docs = api.swagger_ui();
    Route::new()
        .at("/api/openapi.json", spec)
        .nest("/api/docs", docs)
        .nest("/api", api)
        .at("/", get(crate::pages::index))
        .at("/login", get(crate::pages::login))
        .at("/static/app.js", get(crate::pages::app_js))
        .at("/static/login.js", get(crate::pages::login_js))
        .at("/static/app.css", get(crate::pages::app_css))
        .at("/metrics", get(metrics_endpoint))
        .at("/healthz", get(healthz))
        .at("/readyz", get(readyz))
        .data(pool)
        .around(move |ep, req| authenticate(ep, req, session.clone()))
        .data(metrics.clone())
        .around(move |ep, req| crate::metrics::observe(ep, req, metrics.clone()))
}

/// A bound, not yet running, query-api.
pub struct Application {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    pool: MySqlPool,
    config: ApiConfig,
}

impl Application {
    /// Binds `config.listen_addr` (port 0 picks a free port).
    pub async fn build(config: &ApiConfig, pool: MySqlPool) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(config.listen_addr).await?;
        let addr = listener.local_addr()?;
        Ok(Application {
            listener,
            addr,
            pool,
            config: config.clone(),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` resolves; waiting long-polls return at once then.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let acceptor = TcpAcceptor::from_tokio(self.listener)?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let metrics = std::sync::Arc::new(crate::metrics::ApiMetrics::default());
        let watcher = ChangeWatcher::start(
            self.pool.clone(),
            self.config.max_waiters,
            stop_rx,
            metrics.waiting_longpolls.clone(),
        );
        let shutdown = async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        };
        Server::new_with_acceptor(acceptor)
            .run_with_graceful_shutdown(
                routes(self.pool, &self.config, watcher, metrics),
                shutdown,
                Some(Duration::from_secs(5)),
            )
            .await
    }
}

/// Applies the schema migrations in `migrations/` (idempotent, locked).
pub async fn migrate(pool: &MySqlPool) -> Result<(), sqlx::migrate::MigrateError> {
    sqlx::migrate!("../migrations").run(pool).await
}
