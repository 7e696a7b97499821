//! `kind = "redis"`: PING, then the server's role from `INFO replication`.

use redis::{AsyncConnectionConfig, IntoConnectionInfo};

use super::{Healthy, Probe, ProbeError, ProbeFuture};
use crate::config::RedisCheck;

/// A fresh connection per probe, like a new worker would open.
pub(super) struct RedisProbe {
    client: redis::Client,
    conn_config: AsyncConnectionConfig,
}

impl RedisProbe {
    pub(super) fn new(c: &RedisCheck) -> Result<Self, String> {
        let info = c
            .url
            .as_str()
            .into_connection_info()
            .map_err(|_| "invalid redis url".to_owned())?;
        let mut settings = info.redis_settings().clone();
        if let Some(u) = &c.username {
            settings = settings.set_username(u);
        }
        if let Some(pw) = &c.password {
            settings = settings.set_password(pw.expose());
        }
        let client = redis::Client::open(info.set_redis_settings(settings))
            .map_err(|_| "invalid redis url".to_owned())?;
        // No driver timeouts: the probe's deadline (probe::run) is the only one.
        let conn_config = AsyncConnectionConfig::new()
            .set_connection_timeout(None)
            .set_response_timeout(None);
        Ok(Self {
            client,
            conn_config,
        })
    }
}

/// `role:master` out of an `INFO replication` answer.
fn role(info: &str) -> Option<&str> {
    info.lines()
        .find_map(|l| l.strip_prefix("role:"))
        .map(str::trim)
}

impl Probe for RedisProbe {
    fn check(&self) -> ProbeFuture<'_> {
        Box::pin(async move {
            let mut con = self
                .client
                .get_multiplexed_async_connection_with_config(&self.conn_config)
                .await
                .map_err(|e| ProbeError::from_error("connect failed", &e))?;
            let pong: String = redis::cmd("PING")
                .query_async(&mut con)
                .await
                .map_err(|e| ProbeError::from_error("PING failed", &e))?;
            if pong != "PONG" {
                return Err(ProbeError::new(format!("PING answered {pong:?}")));
            }
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query_async(&mut con)
                .await
                .map_err(|e| ProbeError::from_error("INFO failed", &e))?;
            let role = role(&info).unwrap_or("unknown");
            Ok(Healthy {
                detail: format!("role={role}"),
                ..Healthy::default()
            })
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn role_is_read_from_info() {
        let info = "# Replication\r\nrole:master\r\nconnected_slaves:0\r\n";
        assert_eq!(super::role(info), Some("master"));
        assert_eq!(super::role("# Replication\r\n"), None);
    }
}
