// Package fleet lists and kicks the sessions of a fleet of imapguard
// instances that share one Redis ([cluster] store = "redis", issue 13):
// the admin API's GET /sessions and POST /sessions/kick go through it
// when cmd/imapguard sets admin.Options.Fleet.
//
// Listing reads the instances' slot records (limits/redisstore, the hash
// imapguard:slots:<instance>): this instance's own sessions come from the
// proxy with all their details, the other instances' from Redis (user,
// address key, start; no connection id, no bytes). A kick is published on
// one fleet channel, imapguard:kick; every instance subscribes to it,
// kicks its own matching sessions as proxy.Server.Kick does, and
// publishes what it kicked on the reply channel the request names. The
// asking instance waits for as many answers as PUBLISH reported
// receivers, for at most Options.KickWait. The messages carry a match
// and a reason, never a secret: the admin token guards the API, not
// Redis. When Redis cannot be reached, both fall back to this instance
// and say so in their note.
package fleet

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/imapguard/imapguard/limits"
	"github.com/imapguard/imapguard/limits/redisstore"
	"github.com/imapguard/imapguard/proxy"
	"github.com/redis/go-redis/v9"
)

// Bounds of the fleet's messages and listings.
const (
	// MaxSessions caps a fleet-wide listing; the note says when it was
	// cut.
	MaxSessions = 10000
	// maxInstances caps the instances' slot records read for a listing.
	maxInstances = 1000
	// maxKickedPerReply caps the sessions one instance reports kicked
	// (its count is still exact).
	maxKickedPerReply = 1000
	// maxRequestBytes and maxReplyBytes bound the messages read from
	// the channels; bigger ones are dropped.
	maxRequestBytes = 8 << 10
	maxReplyBytes   = 1 << 20
)

// Local is this instance's proxy; *proxy.Server implements it.
type Local interface {
	Select(proxy.Match) ([]proxy.ConnInfo, error)
	Kick(proxy.Match, string) ([]proxy.ConnInfo, error)
}

// Options configure a Fleet.
type Options struct {
	Client   redis.UniversalClient
	Instance string // this instance's cluster.instance_id
	// Prefix starts every key and channel; "" means "imapguard:", as
	// redisstore's.
	Prefix string
	Local  Local
	// Timeout bounds one call to Redis; 0 means one second.
	Timeout time.Duration
	// KickWait bounds how long a kick waits for the other instances'
	// answers; 0 means two seconds.
	KickWait time.Duration
	Log      *slog.Logger
}

// Fleet is the fleet-wide view. Make it with New, start its subscriber
// with Start, stop it with Close.
type Fleet struct {
	opts  Options
	store *redisstore.Store // for the key names only
	stop  chan struct{}
	done  chan struct{}
	once  sync.Once
}

// New returns a Fleet; it subscribes to kicks from Start on.
func New(o Options) *Fleet {
	if o.Prefix == "" {
		o.Prefix = "imapguard:"
	}
	if o.Timeout <= 0 {
		o.Timeout = time.Second
	}
	if o.KickWait <= 0 {
		o.KickWait = 2 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return &Fleet{opts: o, store: redisstore.New(redisstore.Options{Instance: o.Instance, Prefix: o.Prefix}),
		stop: make(chan struct{}), done: make(chan struct{})}
}

// KickChannel is the channel every instance listens to for kicks.
func (f *Fleet) KickChannel() string { return f.opts.Prefix + "kick" }

// KickRequest is a kick published on KickChannel.
type KickRequest struct {
	User    string `json:"user,omitempty"`
	Address string `json:"address,omitempty"`
	Reason  string `json:"reason,omitempty"`
	From    string `json:"from"`     // the asking instance, for the logs
	ReplyTo string `json:"reply_to"` // the channel for the answers
}

// KickReply is one instance's answer to a KickRequest.
type KickReply struct {
	Instance string           `json:"instance"`
	Count    int              `json:"count"`
	Kicked   []proxy.ConnInfo `json:"kicked"` // at most maxKickedPerReply
	Error    string           `json:"error,omitempty"`
}

// Start subscribes to KickChannel and answers kicks until Close. It
// returns once the subscription is confirmed or failed; a failure is
// returned, and go-redis keeps trying to subscribe in the background.
func (f *Fleet) Start() error {
	ctx, cancel := context.WithTimeout(context.Background(), f.opts.Timeout)
	defer cancel()
	sub := f.opts.Client.Subscribe(ctx, f.KickChannel())
	_, err := sub.Receive(ctx)
	go f.listen(sub)
	return err
}

// Close stops answering kicks.
func (f *Fleet) Close() {
	f.once.Do(func() { close(f.stop) })
	<-f.done
}

func (f *Fleet) listen(sub *redis.PubSub) {
	defer close(f.done)
	defer sub.Close()
	ch := sub.Channel(redis.WithChannelSize(16))
	for {
		select {
		case <-f.stop:
			return
		case msg, ok := <-ch:
			if !ok {
				return
			}
			f.answer(msg.Payload)
		}
	}
}

// answer kicks this instance's sessions a request matches and publishes
// what it kicked.
func (f *Fleet) answer(payload string) {
	defer func() {
		if r := recover(); r != nil {
			f.opts.Log.Error("fleet kick: panic", "panic", r, "stack", string(debug.Stack()))
		}
	}()
	if len(payload) > maxRequestBytes {
		f.opts.Log.Warn("fleet kick: request too big, dropped", "bytes", len(payload))
		return
	}
	var req KickRequest
	if err := json.Unmarshal([]byte(payload), &req); err != nil || req.ReplyTo == "" ||
		!strings.HasPrefix(req.ReplyTo, f.opts.Prefix+"kick:reply:") || (req.User == "" && req.Address == "") {
		f.opts.Log.Warn("fleet kick: bad request, dropped", "err", err)
		return
	}
	rep := KickReply{Instance: f.opts.Instance, Kicked: []proxy.ConnInfo{}}
	infos, err := f.opts.Local.Kick(proxy.Match{User: req.User, Address: req.Address}, req.Reason)
	if err != nil {
		rep.Error = err.Error()
	}
	rep.Count = len(infos)
	for i := range infos {
		infos[i].Instance = f.opts.Instance
	}
	rep.Kicked = append(rep.Kicked, infos[:min(len(infos), maxKickedPerReply)]...)
	if rep.Count > 0 {
		f.opts.Log.Info("fleet kick", "count", rep.Count, "user", req.User, "address", req.Address, "from", req.From)
	}
	b, _ := json.Marshal(rep) // no type in KickReply fails to marshal
	ctx, cancel := context.WithTimeout(context.Background(), f.opts.Timeout)
	defer cancel()
	if err := f.opts.Client.Publish(ctx, req.ReplyTo, b).Err(); err != nil {
		f.opts.Log.Warn("fleet kick: answer not sent", "err", err)
	}
}

// Notes of a fleet-wide answer.
const (
	noteLocal = "cluster store unreachable: this instance's sessions only"
)

// Sessions lists the sessions m matches across the fleet, this
// instance's first (all its connections, with details), then the other
// instances' authenticated sessions from Redis, by instance and start;
// each has Instance set. The note is "" for a complete fleet-wide list,
// else says what is missing. An error is a bad match.
func (f *Fleet) Sessions(ctx context.Context, m proxy.Match) ([]proxy.ConnInfo, string, error) {
	out, err := f.opts.Local.Select(m)
	if err != nil {
		return nil, "", err
	}
	for i := range out {
		out[i].Instance = f.opts.Instance
	}
	match, err := recordMatcher(m)
	if err != nil {
		return nil, "", err
	}
	recs, truncated, err := f.records(ctx)
	if err != nil {
		f.opts.Log.Warn("fleet sessions: cluster store unreachable", "err", err)
		return out, noteLocal, nil
	}
	var remote []proxy.ConnInfo
	for _, r := range recs {
		if r.User == "" || r.Instance == f.opts.Instance || !match(r) {
			continue // a connection before login, or this instance's (listed above)
		}
		remote = append(remote, proxy.ConnInfo{Client: clientOf(r.Addr), User: r.User, Authenticated: true,
			Since: r.Start, Instance: r.Instance})
	}
	slices.SortFunc(remote, func(a, b proxy.ConnInfo) int {
		return cmp.Or(cmp.Compare(a.Instance, b.Instance), a.Since.Compare(b.Since), cmp.Compare(a.User, b.User))
	})
	out = append(out, remote...)
	note := ""
	if truncated || len(out) > MaxSessions {
		out = out[:min(len(out), MaxSessions)]
		note = fmt.Sprintf("list cut at %d sessions: narrow it with a user or an address", MaxSessions)
	}
	return out, note, nil
}

// records reads every instance's slot records, at most MaxSessions of
// them (truncated then says so).
func (f *Fleet) records(ctx context.Context) (recs []redisstore.Record, truncated bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, f.opts.Timeout)
	defer cancel()
	var keys []string
	iter := f.opts.Client.Scan(ctx, 0, f.store.SlotsKey("*"), 100).Iterator()
	for iter.Next(ctx) {
		if len(keys) == maxInstances {
			truncated = true
			break
		}
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		return nil, false, err
	}
	slices.Sort(keys)
	pipe := f.opts.Client.Pipeline()
	cmds := make([]*redis.MapStringStringCmd, len(keys))
	for i, k := range keys {
		cmds[i] = pipe.HGetAll(ctx, k)
	}
	if len(keys) > 0 {
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, false, err
		}
	}
	for _, c := range cmds {
		for _, v := range c.Val() {
			if len(recs) == MaxSessions {
				return recs, true, nil
			}
			var r redisstore.Record
			if json.Unmarshal([]byte(v), &r) == nil {
				recs = append(recs, r)
			}
		}
	}
	return recs, truncated, nil
}

// clientOf shows an address key as a client: an IPv4 /32 as the address,
// a wider prefix (IPv6 /64) as the prefix.
func clientOf(addr string) string {
	if p, err := netip.ParsePrefix(addr); err == nil && p.IsSingleIP() {
		return p.Addr().String()
	}
	return addr
}

// recordMatcher is proxy.Match's for records, which know the client's
// address key and not its port: an address that falls in the key matches,
// as does a prefix that overlaps it, and a host:port its host.
func recordMatcher(m proxy.Match) (func(redisstore.Record) bool, error) {
	var want netip.Prefix
	if a := strings.TrimSpace(m.Address); a != "" {
		if p, err := netip.ParsePrefix(a); err == nil {
			want = p.Masked()
		} else if ip, err := netip.ParseAddr(a); err == nil {
			want = netip.PrefixFrom(ip.Unmap(), ip.Unmap().BitLen())
		} else if ap, err := netip.ParseAddrPort(a); err == nil {
			want = netip.PrefixFrom(ap.Addr().Unmap(), ap.Addr().Unmap().BitLen())
		} else {
			return nil, fmt.Errorf("address %q is not an IP address, a prefix or host:port", m.Address)
		}
	}
	user := limits.UserKey(m.User)
	return func(r redisstore.Record) bool {
		if user != "" && limits.UserKey(r.User) != user {
			return false
		}
		if want.IsValid() {
			p, err := netip.ParsePrefix(r.Addr)
			if err != nil || !p.Overlaps(want) {
				return false
			}
		}
		return true
	}, nil
}

// Kick closes the sessions m matches on every instance, this one
// included, and returns them, each with Instance set, waiting at most
// KickWait for the other instances' answers. The note is "" when every
// instance that received the kick answered, else says what is missing
// (Redis unreachable: this instance kicked only; instances that did not
// answer in time). An error is a bad match (proxy.ErrEmptyMatch, a bad
// address).
func (f *Fleet) Kick(ctx context.Context, m proxy.Match, reason string) ([]proxy.ConnInfo, string, error) {
	if _, err := recordMatcher(m); err != nil {
		return nil, "", err
	}
	if strings.TrimSpace(m.User) == "" && strings.TrimSpace(m.Address) == "" {
		return nil, "", proxy.ErrEmptyMatch
	}
	kickLocal := func(note string) ([]proxy.ConnInfo, string, error) {
		infos, err := f.opts.Local.Kick(m, reason)
		for i := range infos {
			infos[i].Instance = f.opts.Instance
		}
		return infos, note, err
	}
	replies, n, err := f.publish(ctx, m, reason)
	if err != nil {
		f.opts.Log.Warn("fleet kick: cluster store unreachable; kicking here only", "err", err)
		return kickLocal("cluster store unreachable: kicked on this instance only")
	}
	var out []proxy.ConnInfo
	var missing []string
	self := false
	for _, r := range replies {
		self = self || r.Instance == f.opts.Instance
		out = append(out, r.Kicked...)
		if r.Count > len(r.Kicked) {
			missing = append(missing, fmt.Sprintf("%s kicked %d, listed %d", r.Instance, r.Count, len(r.Kicked)))
		}
		if r.Error != "" {
			missing = append(missing, r.Instance+": "+r.Error)
		}
	}
	if !self {
		// This instance's subscription was not there (being
		// re-established): kick here directly.
		local, _, err := kickLocal("")
		if err != nil {
			return nil, "", err
		}
		out = append(local, out...)
	}
	if len(replies) < n {
		missing = append(missing, fmt.Sprintf("%d of %d instances did not answer within %v",
			n-len(replies), n, f.opts.KickWait))
	}
	slices.SortStableFunc(out, func(a, b proxy.ConnInfo) int {
		return cmp.Or(cmp.Compare(a.Instance, b.Instance), cmp.Compare(a.ID, b.ID))
	})
	return out, strings.Join(missing, "; "), nil
}

// publish sends the kick to the fleet and collects the answers: n is how
// many instances received it.
func (f *Fleet) publish(ctx context.Context, m proxy.Match, reason string) (replies []KickReply, n int, err error) {
	var id [12]byte
	rand.Read(id[:])
	req := KickRequest{User: m.User, Address: m.Address, Reason: reason, From: f.opts.Instance,
		ReplyTo: f.opts.Prefix + "kick:reply:" + hex.EncodeToString(id[:])}
	b, _ := json.Marshal(req) // no type in KickRequest fails to marshal
	if len(b) > maxRequestBytes {
		return nil, 0, errors.New("fleet: kick request too big")
	}
	cctx, cancel := context.WithTimeout(ctx, f.opts.Timeout)
	defer cancel()
	// Subscribe to the answers before asking, or a fast one is lost.
	sub := f.opts.Client.Subscribe(cctx, req.ReplyTo)
	defer sub.Close()
	if _, err := sub.Receive(cctx); err != nil {
		return nil, 0, err
	}
	got, err := f.opts.Client.Publish(cctx, f.KickChannel(), b).Result()
	if err != nil {
		return nil, 0, err
	}
	n = int(got)
	wait := time.NewTimer(f.opts.KickWait)
	defer wait.Stop()
	ch := sub.Channel(redis.WithChannelSize(16))
	for len(replies) < n {
		select {
		case <-ctx.Done():
			return replies, n, nil
		case <-wait.C:
			return replies, n, nil
		case msg, ok := <-ch:
			if !ok {
				return replies, n, nil
			}
			var r KickReply
			if len(msg.Payload) > maxReplyBytes || json.Unmarshal([]byte(msg.Payload), &r) != nil {
				f.opts.Log.Warn("fleet kick: bad answer, dropped", "bytes", len(msg.Payload))
				continue
			}
			replies = append(replies, r)
		}
	}
	return replies, n, nil
}
