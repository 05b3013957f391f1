//! Starting and stopping a whole coordinator: journal, nodes, discovery, manager, gRPC and
//! HTTP.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use fleet_proto::v1::fleet_service_server::FleetServiceServer;
use fleet_proto::v1::job_service_server::JobServiceServer;
use prometheus::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tracing::{info, warn};

use crate::config::Config;
use crate::events::{EventHub, EventHubConfig};
use crate::fleet::actor::{self, ActorContext, ActorSettings};
use crate::fleet::discovery::{self, DiscoveryDeps, NodeFactory, Resolver, SystemResolver};
use crate::fleet::{Fleet, NodeSpec};
use crate::journal::{JobStore, SqliteOptions, SqliteStore};
use crate::manager::{self, ManagerSettings};
use crate::metrics::Metrics;
use crate::service::{FleetApi, JobApi, SubmitLimits};

/// Errors while starting a coordinator.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error("configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    /// The data directory or journal cannot be used.
    #[error("journal: {0}")]
    Journal(#[from] crate::journal::JournalError),
    /// A listen address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A node's URL cannot be used.
    #[error("node {node}: {message}")]
    Node {
        /// The node.
        node: String,
        /// Why.
        message: String,
    },
    /// The data directory cannot be prepared.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Another coordinator holds the data directory.
    #[error(
        "data directory {path} is in use by another coordinator{holder}; give each coordinator \
         its own data_dir (its journal has one writer)"
    )]
    DataDirInUse {
        /// The directory.
        path: String,
        /// `" (pid N)"` when the holder wrote its process id, else empty.
        holder: String,
    },
    /// The metrics registry refused a family.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The placement policy settings are invalid.
    #[error("placement: {0}")]
    Policy(#[from] scheduler::SchedulerError),
}

/// Extra start options that do not come from the configuration file.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// Node names that are emulated (shown as simulated to operators).
    pub simulated: Vec<String>,
    /// The registry metrics go into; a fresh one when `None`.
    pub registry: Option<Registry>,
    /// The placement policy; the configuration's `placement` when `None`.
    pub policy: Option<scheduler::PolicyConfig>,
    /// Resolves the hosts of `[discovery]` sources; the system resolver when `None`.
    pub resolver: Option<Arc<dyn Resolver>>,
}

/// A running coordinator.
pub struct Coordinator {
    grpc_addr: SocketAddr,
    http_addr: SocketAddr,
    metrics: Metrics,
    fleet: Arc<Fleet>,
    /// Dropping or firing it stops every task.
    shutdown_tx: watch::Sender<bool>,
    /// The gRPC and HTTP servers, given [`SHUTDOWN_GRACE`] to answer what is in flight.
    servers: Vec<JoinHandle<()>>,
    tasks: Vec<JoinHandle<()>>,
    /// Held while the coordinator lives: the journal has one writer.
    _data_lock: std::fs::File,
}

impl Coordinator {
    /// Starts a coordinator from `config`; listen ports of 0 pick free ports.
    pub async fn start(config: Config, options: StartOptions) -> Result<Self, StartError> {
        config.validate()?;
        if config.data_dir.exists() && !config.data_dir.is_dir() {
            return Err(StartError::DataDir {
                path: config.data_dir.display().to_string(),
                source: std::io::Error::other("exists and is not a directory"),
            });
        }
        std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::DataDir {
            path: config.data_dir.display().to_string(),
            source,
        })?;
        let data_lock = lock_data_dir(&config.data_dir)?;
        let coordinator_id = coordinator_id(&config.data_dir)?;

        // Both listeners are bound before any task starts, so a taken port fails the start
        // cleanly, with nothing left running.
        let grpc_listener = TcpListener::bind(config.grpc_listen)
            .await
            .map_err(|source| StartError::Listen {
                addr: config.grpc_listen,
                source,
            })?;
        let grpc_addr = grpc_listener
            .local_addr()
            .map_err(|source| StartError::Listen {
                addr: config.grpc_listen,
                source,
            })?;
        let http_listener = TcpListener::bind(config.http_listen)
            .await
            .map_err(|source| StartError::Listen {
                addr: config.http_listen,
                source,
            })?;
        let http_addr = http_listener
            .local_addr()
            .map_err(|source| StartError::Listen {
                addr: config.http_listen,
                source,
            })?;
        let registry = options.registry.clone().unwrap_or_default();
        let metrics = Metrics::new(registry)?;
        let journal = SqliteStore::open_in_dir(&config.data_dir, SqliteOptions::default())?;
        let run = journal.run();
        let store: Arc<dyn JobStore> = Arc::new(journal);
        let hub = Arc::new(EventHub::new(EventHubConfig {
            capacity: config.events.log_capacity,
            retention: config.events.retention,
            max_watchers: config.limits.max_watchers_per_job,
        }));

        // The configured nodes; discovered ones join once the actors can start.
        let factory = NodeFactory {
            coordinator_id: coordinator_id.clone(),
            slots_per_node: config.dispatch.slots_per_node,
        };
        let mut nodes = Vec::new();
        for node in &config.nodes {
            let spec = NodeSpec {
                name: node.name.clone(),
                url: node.url.to_string(),
                labels: node.labels.clone(),
                simulated: options.simulated.contains(&node.name),
            };
            let built = factory.build(spec).map_err(|error| StartError::Node {
                node: node.name.clone(),
                message: error.to_string(),
            })?;
            nodes.push(Arc::new(built));
        }
        let fleet = Arc::new(Fleet::new(nodes));

        // The manager.
        let policy = scheduler::build_policy(
            &options
                .policy
                .clone()
                .unwrap_or_else(|| config.placement.clone()),
        )?;
        let settings = ManagerSettings {
            max_attempts: config.dispatch.max_attempts,
            max_queued_jobs: config.limits.max_queued_jobs,
            stall_timeout: config.dispatch.stall_timeout,
            max_queued_jobs_per_tenant: config.limits.max_queued_jobs_per_tenant,
            uploads: Some(
                crate::facade::UploadStore::open(config.data_dir.join("uploads")).map_err(
                    |error| StartError::DataDir {
                        path: config.data_dir.join("uploads").display().to_string(),
                        source: std::io::Error::other(error.to_string()),
                    },
                )?,
            ),
            ..ManagerSettings::default()
        };
        let (manager, signals_tx, manager_task) = manager::spawn(
            store.clone(),
            hub.clone(),
            fleet.clone(),
            metrics.clone(),
            policy,
            settings,
        );
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let mut tasks = vec![manager_task];

        // Node actors.
        let websocket = comfy_api::ws::WsConfig {
            idle_timeout: config.websocket.idle_timeout,
            backoff_min: config.websocket.reconnect_min,
            backoff_max: config.websocket.reconnect_max,
            ..comfy_api::ws::WsConfig::default()
        };
        let context = ActorContext {
            hub: hub.clone(),
            metrics: metrics.clone(),
            signals_tx,
            shutdown_rx: shutdown_rx.clone(),
            settings: ActorSettings {
                probe_interval: config.probe.interval,
                probe_jitter: config.probe.jitter,
                probe_timeout: config.probe.timeout,
                down_after: config.dispatch.node_down_grace,
                websocket,
                ..ActorSettings::default()
            },
        };
        for node in fleet.nodes() {
            metrics.set_node_health(&node.spec.name, "suspect");
            tasks.extend(actor::spawn(node, context.clone()));
        }
        let discovery_deps = DiscoveryDeps {
            fleet: fleet.clone(),
            factory,
            actor: context.clone(),
            resolver: options
                .resolver
                .clone()
                .unwrap_or_else(|| Arc::new(SystemResolver)),
        };
        // Nodes an operator drained stay drained, before any job is placed: the configured
        // ones now, and any that discovery finds under a drained name start drained (see
        // `Fleet::insert`).
        // NOTE: the record of a drained node that left the fleet for good is kept until an
        // operator undrains it, which needs it back in the fleet.
        for name in store.drained_nodes().await? {
            if let Some(node) = fleet.set_drained(&name, true) {
                let health = node.status().operator_health();
                metrics.set_node_health(&name, health.as_str());
                info!(node = %name, "kept drained from the previous run");
            }
        }

        // The first discovery round is awaited before recovery (see `discovery::start`).
        tasks.extend(
            discovery::start(&config.discovery.sources, &discovery_deps, &shutdown_rx).await,
        );

        // Jobs left unfinished by an earlier run come back before anything new is accepted.
        // Queued jobs come without their workflow bytes (a dispatch reads them back), so this
        // peaks at the size of the queue's records, not of its workflows.
        let unfinished = store.load_unfinished().await?;
        if !unfinished.is_empty() {
            info!(
                num_jobs = unfinished.len(),
                "recovering unfinished jobs from the journal"
            );
        }
        for job in unfinished {
            // The log is opened here, before the manager opens it, so the job's events are
            // numbered on from above the earlier runs' numbers.
            hub.open_resumed(job.id, run);
            let _ = manager.recover(job);
        }

        tasks.push(tokio::spawn(EventHub::run_purger(
            Arc::downgrade(&hub),
            Duration::from_secs(30),
        )));
        tasks.push(tokio::spawn(purge_journal(
            store.clone(),
            config.retention,
            shutdown_rx.clone(),
        )));

        // gRPC.
        let limits = SubmitLimits {
            max_workflow_bytes: usize::try_from(config.limits.max_workflow_bytes)
                .unwrap_or(usize::MAX),
            max_nodes: usize::try_from(config.limits.max_nodes_per_workflow).unwrap_or(usize::MAX),
        };
        let max_message =
            usize::try_from(config.limits.max_grpc_message_bytes).unwrap_or(usize::MAX);
        let job_api = JobApi::new(
            store.clone(),
            hub.clone(),
            fleet.clone(),
            manager.clone(),
            metrics.clone(),
            limits,
            shutdown_rx.clone(),
        );
        let fleet_api = FleetApi::new(
            fleet.clone(),
            manager.clone(),
            store.clone(),
            metrics.clone(),
        );
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        health_reporter
            .set_serving::<JobServiceServer<JobApi>>()
            .await;
        health_reporter
            .set_serving::<FleetServiceServer<FleetApi>>()
            .await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(fleet_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|error| StartError::Node {
                node: "reflection".into(),
                message: error.to_string(),
            })?;
        let mut grpc_shutdown = shutdown_rx.clone();
        let grpc = tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(reflection)
            .add_service(JobServiceServer::new(job_api).max_decoding_message_size(max_message))
            .add_service(FleetServiceServer::new(fleet_api))
            .serve_with_incoming_shutdown(accept_without_delay(grpc_listener), async move {
                let _ = grpc_shutdown.changed().await;
            });
        let mut servers = Vec::with_capacity(2);
        servers.push(tokio::spawn(async move {
            if let Err(error) = grpc.await {
                warn!(%error, "gRPC server stopped");
            }
        }));

        // HTTP.
        let facade = crate::facade::Facade::open(crate::facade::FacadeDeps {
            metrics: metrics.clone(),
            store: store.clone(),
            hub: hub.clone(),
            fleet: fleet.clone(),
            manager: manager.clone(),
            data_dir: config.data_dir.clone(),
            max_workflow_bytes: usize::try_from(config.limits.max_workflow_bytes)
                .unwrap_or(usize::MAX),
            max_nodes: usize::try_from(config.limits.max_nodes_per_workflow).unwrap_or(usize::MAX),
        })
        .map_err(|error| StartError::DataDir {
            path: config.data_dir.display().to_string(),
            source: std::io::Error::other(error.to_string()),
        })?;
        let router = crate::http::router(crate::http::HttpState {
            fleet: fleet.clone(),
            metrics: metrics.clone(),
            facade: Some(facade),
        })
        .layer(axum::extract::DefaultBodyLimit::max(
            usize::try_from(config.limits.max_http_body_bytes).unwrap_or(usize::MAX),
        ));
        let mut http_shutdown = shutdown_rx.clone();
        servers.push(tokio::spawn(async move {
            let http_listener = http_listener.tap_io(|stream| {
                let _ = stream.set_nodelay(true);
            });
            let served = axum::serve(http_listener, router).with_graceful_shutdown(async move {
                let _ = http_shutdown.changed().await;
            });
            if let Err(error) = served.await {
                warn!(%error, "HTTP server stopped");
            }
        }));

        info!(
            %grpc_addr,
            %http_addr,
            num_nodes = config.nodes.len(),
            num_discovery_sources = config.discovery.sources.len(),
            "coordinator started"
        );
        Ok(Self {
            grpc_addr,
            http_addr,
            metrics,
            fleet,
            shutdown_tx,
            servers,
            tasks,
            _data_lock: data_lock,
        })
    }

    /// The bound gRPC address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The coordinator's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The fleet.
    pub fn fleet(&self) -> &Arc<Fleet> {
        &self.fleet
    }

    /// Stops accepting requests and stops every task. Jobs on nodes keep running there and
    /// are reattached by the next start (every state change is already in the journal).
    ///
    /// The servers first get up to [`SHUTDOWN_GRACE`] to finish the calls in flight: open
    /// watch streams end with `UNAVAILABLE`, which tells a caller to resume from its last
    /// sequence, rather than with a connection reset.
    pub async fn shutdown(self) {
        let _ = self.shutdown_tx.send(true);
        let mut servers = self.servers;
        let finished = tokio::time::timeout(SHUTDOWN_GRACE, async {
            for server in &mut servers {
                let _ = server.await;
            }
        })
        .await;
        if finished.is_err() {
            warn!(
                grace_ms = SHUTDOWN_GRACE.as_millis() as u64,
                "calls still open at shutdown were cut off"
            );
        }
        for server in servers {
            server.abort();
        }
        for task in self.tasks {
            task.abort();
            let _ = task.await;
        }
        info!("coordinator stopped");
    }
}

/// How long [`Coordinator::shutdown`] waits for the servers to finish the calls in flight.
///
/// Long enough for unary calls and the last frames of streams; short enough that Kubernetes'
/// default 30-second termination grace is far away.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Accepted gRPC connections with Nagle's algorithm off.
///
/// Watch streams send many small frames; with Nagle on, each waits for the client's delayed
/// acknowledgement (about 40 ms on Linux), which showed up as the relay latency at low rates.
/// tonic's own `tcp_nodelay` setting does not apply to an incoming stream, hence this.
fn accept_without_delay(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    TcpListenerStream::new(listener).map(|accepted| {
        accepted.inspect(|stream| {
            let _ = stream.set_nodelay(true);
        })
    })
}

/// Takes the data directory for this process: an exclusive lock on the directory itself,
/// released when the returned handle is closed (also when the process dies, so a crash never
/// leaves it locked). Two coordinators on one journal would each retry, finish and fail the
/// other's jobs; the second one is refused instead. Locking the directory rather than a file
/// in it means no cleanup of the folder's files can undo the lock.
fn lock_data_dir(data_dir: &Path) -> Result<std::fs::File, StartError> {
    let failed = |source| StartError::DataDir {
        path: data_dir.display().to_string(),
        source,
    };
    let dir = std::fs::File::open(data_dir).map_err(failed)?;
    match dir.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = std::fs::symlink_metadata(data_dir.join(PID_FILE))
                .ok()
                .filter(std::fs::Metadata::is_file)
                .and_then(|_| std::fs::read_to_string(data_dir.join(PID_FILE)).ok())
                .and_then(|text| text.trim().parse::<u32>().ok())
                .map(|pid| format!(" (pid {pid})"))
                .unwrap_or_default();
            return Err(StartError::DataDirInUse {
                path: data_dir.display().to_string(),
                holder,
            });
        }
        Err(std::fs::TryLockError::Error(source)) => return Err(failed(source)),
    }
    write_pid(data_dir);
    Ok(dir)
}

/// Where the lock holder writes its process id, for the message a second coordinator prints.
const PID_FILE: &str = "coordinator.pid";

/// Writes this process's id to [`PID_FILE`], best effort: through a new file renamed into
/// place, so a link planted under that name is replaced, never followed.
fn write_pid(data_dir: &Path) {
    let temp = data_dir.join(format!("{PID_FILE}.{}", std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp)
        .and_then(|mut file| {
            use std::io::Write;
            writeln!(file, "{}", std::process::id())
        })
        .and_then(|()| std::fs::rename(&temp, data_dir.join(PID_FILE)));
    if let Err(error) = written {
        let _ = std::fs::remove_file(&temp);
        warn!(%error, "cannot write the coordinator's pid file; a second coordinator's refusal will not name this one");
    }
}

/// The coordinator's stable id, kept in the data directory.
fn coordinator_id(data_dir: &Path) -> Result<String, StartError> {
    let path = data_dir.join("coordinator-id");
    let error = |source| StartError::DataDir {
        path: path.display().to_string(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => Ok(text.trim().to_owned()),
        _ => {
            let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
            std::fs::write(&path, &id).map_err(error)?;
            Ok(id)
        }
    }
}

async fn purge_journal(
    store: Arc<dyn JobStore>,
    retention: Duration,
    mut shutdown_rx: watch::Receiver<bool>,
) {
    loop {
        if let Some(before) = std::time::SystemTime::now().checked_sub(retention) {
            match store.purge_finished(before).await {
                Ok(0) => {}
                Ok(num_jobs) => info!(num_jobs, "purged finished jobs past retention"),
                Err(error) => warn!(%error, "journal purge failed"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
            _ = shutdown_rx.changed() => return,
        }
    }
}
