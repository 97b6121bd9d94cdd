package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"strings"
	"time"

	"github.com/imapguard/imapguard/limits"
)

// login logs in to the upstream as user with a password, for the IMAP
// command (LOGIN or AUTHENTICATE) with the mechanism (LOGIN or PLAIN) the
// client used (loginWith).
func (c *conn) login(tag, command, mech, user, pass string) bool {
	return c.loginWith(tag, command, mech, &credentials{user: user, pass: pass})
}

// loginWith logs in to the upstream with cr, for the IMAP command with the
// mechanism the client used (LOGIN, PLAIN, or OAUTHBEARER and XOAUTH2
// passed through), checks the per-user cap and, on success, readies the
// session that will relay the connection. It reports whether the
// connection goes on unauthenticated.
func (c *conn) loginWith(tag, command, mech string, cr *credentials) bool {
	user, pass := cr.user, cr.pass
	fwd := c.forwarding()
	var log *slog.Logger
	if fwd.session != "" {
		// The x-session-id the upstream logs: joins both logs.
		log = withPrefix(c.log, slog.String("user", user), slog.String("mechanism", mech), slog.String("session", fwd.session))
	} else {
		log = withPrefix(c.log, slog.String("user", user), slog.String("mechanism", mech))
	}
	if strings.ContainsRune(user, 0) || strings.ContainsRune(pass, 0) {
		// RFC 4616 §2: no NUL in an authcid or a password. Passed on as
		// PLAIN, where NUL separates the fields, such a user name would
		// log in someone other than the user the proxy counts.
		c.trace.startAuth(c.ctx, command, mech, "").end(authMalformed, "")
		return c.bad(nulCredentials(tag))
	}
	a := c.trace.startAuth(c.ctx, command, mech, user)
	if user == "" {
		a.end(authFailed, "")
		return c.authFailed(authenticationFailed(tag))
	}
	// The brute-force defence, before the upstream is asked.
	if proceed, cont := c.authGate(a, log, tag, user); !proceed {
		return cont
	}
	start := time.Now()
	up, err := c.upstreamLogin(a, cr, fwd, user, log)
	if err != nil && cr.clientErr != nil {
		// The client went away, or sent too much, while answering the
		// upstream's challenge (oauth.go).
		a.end(authAborted, "")
		return c.readError(cr.clientErr)
	}
	if err != nil && c.ctx.Err() != nil {
		// Kicked or shut down during the login: not the upstream's
		// doing, and the client has been told BYE.
		a.end(authAborted, "")
		return false
	}
	if err != nil {
		var le *loginError
		if !errors.As(err, &le) {
			le = &loginError{kind: loginUnavailable, err: err}
		}
		switch le.kind {
		case loginAuthFailed:
			if le.err == nil {
				// A NO to the credentials; a BAD (le.err says why) is
				// the proxy's or the upstream's trouble, not a guess.
				c.authFailedUpstream(user)
			}
			a.end(authFailed, "")
			attrs := []any{"upstream_time", time.Since(start)}
			if le.err != nil {
				attrs = append(attrs, "detail", le.err)
			}
			log.Info("authentication failed", attrs...)
			return c.authFailed(authenticationFailed(tag))
		case loginRefused:
			a.end(authRefused, le.code)
			log.Info("upstream refused login", "code", le.code, "text", le.text)
			return c.w.respond(upstreamRefused(tag, le.code, le.text)) == nil
		}
		a.end(authUnavailable, "")
		log.Warn("upstream unavailable", "err", le.err)
		return c.w.respond(upstreamUnavailable(tag)) == nil
	}
	// The password was right, whether or not the per-user caps admit
	// the session.
	c.authSucceeded(user)
	releaseUser, checks, err := c.srv.limiter.AdmitUser(user, clientAddr(c.remote))
	c.trace.limitEvents(a.span, checks, err)
	var lim *limits.Error
	if errors.As(err, &lim) {
		// max_connections_per_user or max_connections_per_user_ip,
		// checked only now that the upstream accepted the password, so
		// the answer tells nothing to someone who does not know it.
		up.logout()
		a.end(authLimit, "")
		log.Info("login refused", "reason", lim.Error(), "limit", lim.Limit, "count", lim.Count, "max", lim.Value)
		return c.w.respond(userLimitNo(tag, lim)) == nil
	}
	if errors.Is(err, limits.ErrUnavailable) {
		up.logout()
		a.end(authUnavailable, "")
		log.Warn("login refused: cluster store unavailable", "err", err)
		return c.w.respond(clusterUnavailable(tag)) == nil
	}
	a.end(authSuccess, "")
	sess := c.srv.newRelay(c, up.nc)
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		releaseUser()
		up.logout()
		return false
	}
	c.releaseUser = countSession(up, releaseUser)
	c.user = user
	c.backend = up.backendName
	c.sess = sess
	c.mu.Unlock()
	c.srv.authenticated(c)
	c.trace.loggedIn(user, c.opts.RecordUser)
	c.w.handOver(c.opts.IdleTimeout, sess.closeAfterFlush)
	c.nc.SetDeadline(time.Time{})
	up.nc.SetDeadline(time.Time{})
	if up.backend != nil {
		// Several upstreams (route.go): which one holds the session.
		log = withPrefix(log, slog.String("backend", up.backendName))
	}
	log.LogAttrs(context.Background(), slog.LevelInfo, "logged in", slog.Duration("upstream_time", time.Since(start)))
	c.trace.startSession()
	if c.w.respond(loggedIn(tag, clientCaps(up.caps))) != nil {
		return false
	}
	// Bytes either side sent right behind the login (pipelined
	// commands) are already in the readers; the relay starts with them.
	upInitial, _ := up.br.Peek(up.br.Buffered())
	sess.setInitial(bytes.Clone(upInitial), bytes.Clone(c.r.Buffered()))
	c.ready = sess
	return false
}

// forwarding is what this connection tells the upstream about its
// client (Options.ForwardClient): a session id only with ForwardID.
func (c *conn) forwarding() *forwarding {
	f := &forwarding{mode: c.opts.ForwardClient, client: c.remote, local: c.local, clientID: c.clientID}
	if f.mode == ForwardID {
		f.session = newSessionID()
	}
	c.mu.Lock()
	tc, ok := c.nc.(*tls.Conn)
	active := c.tlsActive
	c.mu.Unlock()
	if ok && active {
		f.clientTLS = tlsVersionName(tc.ConnectionState().Version)
	}
	return f
}

// upstreamLogin dials the upstream and logs in there with the client's
// credentials, tracing both steps.
func (c *conn) upstreamLogin(a *authSpan, cr *credentials, fwd *forwarding, user string, log *slog.Logger) (*upstream, error) {
	start := time.Now()
	dctx, dspan := a.upstreamSpan(spanDial)
	up, o, err := c.srv.dialRoute(dctx, c.opts, user, fwd)
	endSpan(dspan, err)
	if c.ctx.Err() == nil {
		c.trace.dialed(time.Since(start), err == nil)
	}
	if err != nil {
		return nil, err
	}
	lstart := time.Now()
	lctx, lspan := a.upstreamSpan(spanLogin)
	idErr, err := up.login(lctx, cr, fwd)
	c.srv.learnUpstreamCaps(o, up.preLogin)
	if idErr != nil {
		log.Warn("upstream refused the ID; logging in without it", "detail", idErr)
	}
	result, code := loginResult(err)
	endLoginSpan(lspan, result, code)
	if c.ctx.Err() == nil {
		c.trace.loginAnswered(time.Since(lstart), result)
	}
	if err != nil {
		up.logout()
		return nil, err
	}
	return up, nil
}

// loginResult names the result of an upstream login for telemetry, from
// a fixed set, with the upstream's response code when it refused: never
// the upstream's text, which may name the user.
func loginResult(err error) (result, code string) {
	var le *loginError
	switch {
	case err == nil:
		return authSuccess, ""
	case errors.As(err, &le) && le.kind == loginAuthFailed:
		return authFailed, ""
	case errors.As(err, &le) && le.kind == loginRefused:
		return authRefused, le.code
	}
	return authUnavailable, ""
}
