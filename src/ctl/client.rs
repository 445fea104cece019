//! A blocking client of the admin API (ureq), for `spate ctl` and
//! `spate top`: where the server is, which token to send, and JSON in and
//! out. Errors are one line an operator can act on.

use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

/// How to reach the admin server, from flags, the environment or spate's
/// configuration.
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// The admin server [default: the configuration's first admin.listen]
    #[arg(long = "admin", value_name = "URL", global = true)]
    pub admin: Option<String>,
    /// The injection listener, for `inject` [default: the configuration's
    /// first inject.listen]
    #[arg(long = "inject-url", value_name = "URL", global = true)]
    pub inject: Option<String>,
    /// A file holding the token (a line TOKEN or NAME:TOKEN; the first is
    /// used) [default: $SPATE_ADMIN_TOKEN, else admin.token_file, else
    /// <spool dir>/admin.token]
    #[arg(long = "token-file", value_name = "FILE", global = true)]
    pub token_file: Option<PathBuf>,
    /// spate's configuration file, to find the server and its token.
    #[arg(long = "config", value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// The spool directory, to find the token spate made.
    #[arg(long = "spool", value_name = "DIR", global = true)]
    pub spool: Option<PathBuf>,
    /// PEM certificates to trust for an https admin server (a self-signed
    /// one, say) [default: the Mozilla roots]
    #[arg(long = "ca-file", value_name = "FILE", global = true)]
    pub ca_file: Option<PathBuf>,
}

pub struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
    tls: ureq::tls::TlsConfig,
}

/// How long one request may take (an event stream is read without it).
const TIMEOUT: Duration = Duration::from_secs(30);

impl Target {
    /// A client of the admin server.
    pub fn connect(&self) -> Result<Client, String> {
        self.connect_to(false)
    }

    /// A client of the admin server, or (`injection`) of the injection
    /// listener.
    pub fn connect_to(&self, injection: bool) -> Result<Client, String> {
        let file = self
            .config
            .as_deref()
            .map(crate::config::RawConfig::load)
            .transpose()
            .map_err(|e| e.to_string())?;
        let overrides = crate::config::Overrides {
            spool_dir: self.spool.clone(),
            ..Default::default()
        };
        let cfg = crate::config::Config::build(file, overrides).map_err(|e| e.to_string())?;
        let (url, listen, hint) = if injection {
            (
                &self.inject,
                &cfg.platform.inject.listen,
                "inject.listen is empty: give --inject-url URL",
            )
        } else {
            (
                &self.admin,
                &cfg.admin.listen,
                "admin.listen is empty: give --admin URL",
            )
        };
        let base = match url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => {
                let addr = listen.first().ok_or(hint)?;
                let scheme = if cfg.admin.tls.is_some() {
                    "https"
                } else {
                    "http"
                };
                format!("{scheme}://{addr}")
            }
        };
        let token = match std::env::var("SPATE_ADMIN_TOKEN") {
            Ok(t) if self.token_file.is_none() && !t.is_empty() => Some(t),
            _ => {
                let path = self
                    .token_file
                    .clone()
                    .or(cfg.admin.token_file.clone())
                    .unwrap_or_else(|| crate::admin::token::default_file(&cfg.spool_dir));
                // No token is fine for reads on loopback; the server says
                // when one is needed.
                crate::admin::Tokens::load(&path)
                    .ok()
                    .map(|t| t.first().to_string())
            }
        };
        let tls = self.tls()?;
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(TIMEOUT))
            .tls_config(tls.clone())
            .build()
            .new_agent();
        Ok(Client {
            base,
            token,
            agent,
            tls,
        })
    }

    fn tls(&self) -> Result<ureq::tls::TlsConfig, String> {
        let mut b = ureq::tls::TlsConfig::builder();
        if let Some(path) = &self.ca_file {
            let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let mut certs = Vec::new();
            for item in ureq::tls::parse_pem(&pem) {
                if let ureq::tls::PemItem::Certificate(c) =
                    item.map_err(|e| format!("{}: {e}", path.display()))?
                {
                    certs.push(c.to_owned());
                }
            }
            if certs.is_empty() {
                return Err(format!("{}: no certificate", path.display()));
            }
            b = b.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
        }
        Ok(b.build())
    }
}

impl Client {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn answer(
        &self,
        r: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Value, String> {
        let mut r = r.map_err(|e| format!("{}: {e}", self.base))?;
        let status = r.status();
        let text = r
            .body_mut()
            .read_to_string()
            .map_err(|e| format!("{}: {e}", self.base))?;
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.is_success() {
            return Ok(v);
        }
        let why = v["error"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string());
        Err(format!("{} ({status})", why))
    }

    pub fn get(&self, path: &str) -> Result<Value, String> {
        let mut req = self.agent.get(self.url(path));
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        self.answer(req.call())
    }

    /// GET, returning the raw text (metrics).
    pub fn get_text(&self, path: &str) -> Result<String, String> {
        match self.get(path)? {
            Value::String(s) => Ok(s),
            other => Ok(other.to_string()),
        }
    }

    pub fn send(&self, method: &str, path: &str, body: &Value) -> Result<Value, String> {
        let url = self.url(path);
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let text = body.to_string();
        let r = match method {
            "POST" => self
                .with(self.agent.post(&url), auth)
                .content_type("application/json")
                .send(text),
            "PUT" => self
                .with(self.agent.put(&url), auth)
                .content_type("application/json")
                .send(text),
            "DELETE" => {
                let req = self.agent.delete(&url).force_send_body();
                self.with(req, auth)
                    .content_type("application/json")
                    .send(text)
            }
            _ => unreachable!("a method of the API"),
        };
        self.answer(r)
    }

    fn with<B>(
        &self,
        req: ureq::RequestBuilder<B>,
        auth: Option<String>,
    ) -> ureq::RequestBuilder<B> {
        match auth {
            Some(a) => req.header("Authorization", a),
            None => req,
        }
    }

    /// Reads an event stream, calling `each` with every record until it
    /// returns false or the stream ends.
    pub fn events(&self, query: &str, mut each: impl FnMut(&Value) -> bool) -> Result<(), String> {
        use std::io::BufRead;
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .tls_config(self.tls.clone())
            .build()
            .new_agent();
        let mut req = agent.get(self.url(&format!("/api/v1/events{query}")));
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let r = req.call().map_err(|e| format!("{}: {e}", self.base))?;
        if !r.status().is_success() {
            return self.answer(Ok(r)).map(|_| ());
        }
        let reader = std::io::BufReader::new(r.into_body().into_reader());
        for line in reader.lines() {
            let line = line.map_err(|e| format!("event stream: {e}"))?;
            let Some(data) = line.strip_prefix("data: ") else {
                continue;
            };
            let Ok(v) = serde_json::from_str::<Value>(data) else {
                continue;
            };
            if !each(&v) {
                break;
            }
        }
        Ok(())
    }
}
