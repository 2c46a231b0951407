-- How the analyst signed in to a console session: single sign-on, or the sign-in form with an
-- API token and a one-time code. Audit entries of the session's requests say which.
ALTER TABLE sessions ADD COLUMN auth_method TEXT NOT NULL DEFAULT 'oidc'
    CHECK (auth_method IN ('oidc', 'api_token'));
