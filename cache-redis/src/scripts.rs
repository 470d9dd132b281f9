//! The Lua scripts of the layout (`lua/`), and how they are run: `EVALSHA`, and after a
//! `NOSCRIPT` (a restart, a failover, `SCRIPT FLUSH`) `EVAL` with the script's body, which
//! cannot fail that way however often scripts are flushed — so `NOSCRIPT` never reaches a
//! caller and never counts as a failure.

use redis::{Cmd, FromRedisValue, ServerErrorKind, ToRedisArgs};

use crate::pool::Conn;

const COMMON: &str = include_str!("lua/common.lua");

/// One script: its body (with the shared functions) and its SHA1.
#[derive(Debug)]
pub(crate) struct Lua {
    body: String,
    sha: String,
}

impl Lua {
    fn new(script: &str) -> Self {
        let body = format!("{COMMON}\n{script}");
        let sha = redis::Script::new(&body).get_hash().to_owned();
        Lua { body, sha }
    }
}

/// The scripts, made once per connector.
#[derive(Debug)]
pub(crate) struct Scripts {
    pub(crate) set: Lua,
    pub(crate) invalidate: Lua,
    pub(crate) delete: Lua,
    pub(crate) renew: Lua,
    pub(crate) sweep: Lua,
    pub(crate) truncate: Lua,
    pub(crate) lease: Lua,
    pub(crate) release: Lua,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Scripts {
            set: Lua::new(include_str!("lua/set.lua")),
            invalidate: Lua::new(include_str!("lua/invalidate.lua")),
            delete: Lua::new(include_str!("lua/delete.lua")),
            renew: Lua::new(include_str!("lua/renew.lua")),
            sweep: Lua::new(include_str!("lua/sweep.lua")),
            truncate: Lua::new(include_str!("lua/truncate.lua")),
            lease: Lua::new(include_str!("lua/lease.lua")),
            release: Lua::new(include_str!("lua/release.lua")),
        }
    }
}

/// A call of a script: its keys and arguments.
pub(crate) struct Call<'a> {
    lua: &'a Lua,
    keys: Vec<&'a str>,
    args: Vec<Vec<u8>>,
}

impl<'a> Call<'a> {
    pub(crate) fn new(lua: &'a Lua) -> Self {
        Call {
            lua,
            keys: Vec::new(),
            args: Vec::new(),
        }
    }

    /// Adds a key (`KEYS[n]`).
    pub(crate) fn key(mut self, key: &'a str) -> Self {
        self.keys.push(key);
        self
    }

    /// Adds keys.
    pub(crate) fn keys(mut self, keys: impl IntoIterator<Item = &'a str>) -> Self {
        self.keys.extend(keys);
        self
    }

    /// Adds an argument (`ARGV[n]`).
    pub(crate) fn arg(mut self, arg: impl ToRedisArgs) -> Self {
        self.args.extend(arg.to_redis_args());
        self
    }

    fn cmd(&self, by_body: bool) -> Cmd {
        let mut cmd = if by_body {
            redis::cmd("EVAL").arg(&self.lua.body).clone()
        } else {
            redis::cmd("EVALSHA").arg(&self.lua.sha).clone()
        };
        cmd.arg(self.keys.len()).arg(&self.keys).arg(&self.args);
        cmd
    }

    /// Runs the script on `connection`: by its SHA1, and by its body after `NOSCRIPT`.
    pub(crate) async fn run<T: FromRedisValue>(
        &self,
        connection: &mut Conn,
    ) -> redis::RedisResult<T> {
        match self.cmd(false).query_async(connection).await {
            Err(e) if e.kind() == redis::ErrorKind::Server(ServerErrorKind::NoScript) => {
                self.cmd(true).query_async(connection).await
            }
            result => result,
        }
    }
}
