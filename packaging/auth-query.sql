-- pgt-proxy's auth query (auth.query_user / auth.query): run once as a superuser in the
-- database named by auth.query_database. It lets one role read SCRAM verifiers, one user at
-- a time, through a SECURITY DEFINER function whose search_path is pinned (so no object a
-- user creates can stand in for pg_authid), and gives NULL for roles that cannot log in,
-- whose VALID UNTIL has passed, or that have no SCRAM verifier.
--
--   psql -d postgres -f /usr/share/doc/pgt-proxy/auth-query.sql
--   then give pgt_proxy_auth a password (auth.query_password_file) or a certificate.

CREATE ROLE pgt_proxy_auth LOGIN;
CREATE SCHEMA IF NOT EXISTS pgt_proxy;
REVOKE ALL ON SCHEMA pgt_proxy FROM PUBLIC;
GRANT USAGE ON SCHEMA pgt_proxy TO pgt_proxy_auth;

CREATE OR REPLACE FUNCTION pgt_proxy.get_auth(p_username text)
RETURNS TABLE (username text, verifier text)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT a.rolname::text,
           CASE WHEN a.rolcanlogin
                 AND (a.rolvaliduntil IS NULL OR a.rolvaliduntil > pg_catalog.now())
                 AND a.rolpassword LIKE 'SCRAM-SHA-256$%'
                THEN a.rolpassword END
    FROM pg_catalog.pg_authid AS a
    WHERE a.rolname = p_username
$$;

REVOKE ALL ON FUNCTION pgt_proxy.get_auth(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgt_proxy.get_auth(text) TO pgt_proxy_auth;
