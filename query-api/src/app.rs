//! Builds the HTTP application and binds its listener, so tests start the same
//! application on port 0.

use crate::auth::LoginLimiter;
use crate::backtests::BacktestsApi;
use crate::changes::ChangeWatcher;
use crate::config::ApiConfig;
use crate::incidents::IncidentsApi;
use crate::machines::MachinesApi;
use crate::rules::EventLogWriter;
use crate::rules::RulesApi;
use crate::session::{authenticate, SessionApi};
use crate::tokens::TokensApi;
use poem::listener::TcpAcceptor;
use poem::{
    get, handler, http::StatusCode, web::Data, EndpointExt, IntoResponse, Response, Route, Server,
};
use poem_openapi::OpenApiService;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use storage::{on, Db};

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
pub fn api_service(db: Db, session: SessionApi, watcher: ChangeWatcher, rules: RulesApi) -> Api {
    OpenApiService::new(
        (
            IncidentsApi {
                db: db.clone(),
                watcher,
            },
            MachinesApi { db: db.clone() },
            session,
            TokensApi { db: db.clone() },
            BacktestsApi {
                db,
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
async fn readyz(db: Data<&Db>) -> Response {
    match on!(*db, |p| sqlx::query("SELECT 1")
        .execute(p)
        .await
        .map(|_| ()))
    {
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
    db: Db,
    config: &ApiConfig,
    watcher: ChangeWatcher,
    metrics: std::sync::Arc<crate::metrics::ApiMetrics>,
    embedded_log: Option<storage::log::EventLog>,
) -> impl poem::Endpoint {
    let session = SessionApi {
        db: db.clone(),
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
    let log = match (embedded_log, producer) {
        (Some(log), _) => EventLogWriter::Embedded(log),
        (None, Some(producer)) => EventLogWriter::Kafka(producer),
        (None, None) => EventLogWriter::None,
    };
    let rules = RulesApi {
        db: db.clone(),
        defaults: config.rules,
        log,
        topic: config.machine_events_topic.clone(),
    };
    let api = api_service(db.clone(), session.clone(), watcher, rules);
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
        .data(db)
        .around(move |ep, req| authenticate(ep, req, session.clone()))
        .data(metrics.clone())
        .around(move |ep, req| crate::metrics::observe(ep, req, metrics.clone()))
}

/// A bound, not yet running, query-api.
pub struct Application {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    db: Db,
    config: ApiConfig,
    embedded_log: Option<storage::log::EventLog>,
}

impl Application {
    /// Binds `config.listen_addr` (port 0 picks a free port).
    pub async fn build(config: &ApiConfig, db: impl Into<Db>) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(config.listen_addr).await?;
        let addr = listener.local_addr()?;
        Ok(Application {
            listener,
            addr,
            db: db.into(),
            config: config.clone(),
            embedded_log: None,
        })
    }

    /// Publishes rule changes to the embedded event log (one-process mode)
    /// instead of Kafka.
    pub fn with_embedded_log(mut self, log: storage::log::EventLog) -> Self {
        self.embedded_log = Some(log);
        self
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
            self.db.clone(),
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
                routes(self.db, &self.config, watcher, metrics, self.embedded_log),
                shutdown,
                Some(Duration::from_secs(5)),
            )
            .await
    }
}
