//! `query-api`: serves the API (default); `query-api migrate` applies the schema;
//! `query-api user create|list|set-password|delete` manages users. Passwords are
//! read from standard input (one line), never from the command line.

use anyhow::Context;
use clap::{Parser, Subcommand};
use proto_events::settings::Settings;
use query_api::auth::{self, Role};
use query_api::config::ApiConfig;
use std::io::{BufRead, IsTerminal, Write};

#[derive(Parser)]
#[command(
    name = "query-api",
    about = "The resource monitor's API and dashboard."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Apply the database migrations and exit.
    Migrate,
    /// Manage users.
    User {
        #[command(subcommand)]
        action: UserAction,
    },
}

#[derive(Subcommand)]
enum UserAction {
    /// Create a user; the password is read from standard input.
    Create {
        /// User name.
        #[arg(long)]
        username: String,
        /// `admin` or `viewer`.
        #[arg(long, default_value = "viewer")]
        role: String,
    },
    /// List users and roles.
    List,
    /// Set a user's password (read from standard input) and end their sessions.
    SetPassword {
        /// User name.
        #[arg(long)]
        username: String,
    },
    /// Delete a user, their sessions and tokens.
    Delete {
        /// User name.
        #[arg(long)]
        username: String,
    },
}

fn read_password() -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("Password (at least 12 characters; it is echoed): ");
        std::io::stderr().flush()?;
    }
    let mut line = String::new();
    stdin.lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = dotenvy::dotenv();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let config = ApiConfig::from_settings(&Settings::from_env())?;
    let db = storage::Db::connect(&config.database_url, 16)
        .await
        .context("connecting to DATABASE_URL")?;
    db.migrate().await.context("applying migrations")?;
    match cli.command {
        Some(Command::Migrate) => {
            tracing::info!("migrations applied");
            Ok(())
        }
        Some(Command::User { action }) => match action {
            UserAction::Create { username, role } => {
                let role = Role::parse(&role).ok_or_else(|| {
                    anyhow::anyhow!("--role must be admin or viewer, not {role:?}")
                })?;
                let password = read_password()?;
                auth::create_user(&db, &username, &password, role).await?;
                println!("created {role} {username}", role = role.as_str());
                Ok(())
            }
            UserAction::List => {
                for (name, role) in auth::list_users(&db).await? {
                    println!("{name}\t{role}");
                }
                Ok(())
            }
            UserAction::SetPassword { username } => {
                let password = read_password()?;
                auth::set_password(&db, &username, &password).await?;
                println!("password of {username} changed; their sessions are ended");
                Ok(())
            }
            UserAction::Delete { username } => {
                auth::delete_user(&db, &username).await?;
                println!("deleted {username}");
                Ok(())
            }
        },
        None => {
            let app = query_api::app::Application::build(&config, db)
                .await
                .context("binding API_LISTEN_ADDR")?;
            tracing::info!(addr = %app.addr(), "query-api listening");
            app.run(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
            Ok(())
        }
    }
}
