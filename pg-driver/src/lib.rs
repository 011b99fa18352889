//! The fullauto `Postgres` trait on a real PostgreSQL server (see issue 4).
