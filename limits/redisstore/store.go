// Package redisstore keeps the session counts of a fleet of imapguard
// instances in Redis, behind limits.Shared; see README.md beside this
// file for the key layout, the scripts, the leases and the failure modes.
package redisstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/imapguard/imapguard/limits"
	"github.com/redis/go-redis/v9"
)

// Options configure a Store.
type Options struct {
	// Client is the Redis client (NewClient makes one from a URL or
	// Sentinel addresses).
	Client redis.UniversalClient
	// Instance names this instance; its slots are recorded under it.
	Instance string
	// Lease is how long a slot counts without being refreshed; the
	// store refreshes every Lease/3. 0 means 30 s.
	Lease time.Duration
	// Timeout bounds one call to Redis; 0 means one second.
	Timeout time.Duration
	// Prefix starts every key; "" means "imapguard:".
	Prefix string
	// OnState is called when Redis becomes unreachable (false) or
	// reachable again (true), from the store's goroutines.
	OnState func(up bool)
	Log     *slog.Logger
}

// ClientOptions name the Redis server: a URL (redis://, rediss://), or
// Sentinel addresses with a master name.
type ClientOptions struct {
	URL       string
	Sentinels []string
	Master    string
}

// NewClient makes a Redis client: a failover client through Sentinel when
// Sentinels are given (the URL then only gives the password, database and
// TLS), else a plain one.
func NewClient(o ClientOptions) (redis.UniversalClient, error) {
	var opt *redis.Options
	if o.URL != "" {
		var err error
		if opt, err = redis.ParseURL(o.URL); err != nil {
			return nil, fmt.Errorf("redis_url: %w", err)
		}
	} else {
		opt = &redis.Options{}
	}
	if len(o.Sentinels) == 0 {
		return redis.NewClient(opt), nil
	}
	return redis.NewFailoverClient(&redis.FailoverOptions{
		MasterName:    o.Master,
		SentinelAddrs: o.Sentinels,
		Username:      opt.Username,
		Password:      opt.Password,
		DB:            opt.DB,
		TLSConfig:     opt.TLSConfig,
	}), nil
}

// Record is what Redis holds of one slot, in the instance's slot records
// (a hash, field = member): enough to list the fleet's sessions.
type Record struct {
	User     string    `json:"user"`
	Addr     string    `json:"addr"`
	Instance string    `json:"instance"`
	Slot     string    `json:"slot"`
	Start    time.Time `json:"start"`
	// The sets the slot is counted in, for clearScript.
	UserKey     string `json:"user_key"`
	UserAddrKey string `json:"user_addr_key"`
}

type held struct {
	member, userKey, userAddrKey string
	record                       string
}

// Store implements limits.Shared over Redis. Make it with New, start it
// with Start, stop it with Close.
type Store struct {
	opts Options

	mu    sync.Mutex
	slots map[string]held // by slot id
	up    bool
	stop  chan struct{}
	done  chan struct{}
	// kick wakes the refresher early (after a failure, to re-synchronise
	// as soon as Redis answers again).
	kick chan struct{}
}

var _ limits.Shared = (*Store)(nil)

// New returns a Store; it talks to Redis only from Start on.
func New(o Options) *Store {
	if o.Lease <= 0 {
		o.Lease = 30 * time.Second
	}
	if o.Timeout <= 0 {
		o.Timeout = time.Second
	}
	if o.Prefix == "" {
		o.Prefix = "imapguard:"
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return &Store{opts: o, slots: make(map[string]held), up: true,
		stop: make(chan struct{}), done: make(chan struct{}), kick: make(chan struct{}, 1)}
}

// SlotsKey is the hash of an instance's slot records.
func (s *Store) SlotsKey(instance string) string { return s.opts.Prefix + "slots:" + instance }

// UserKey is the sorted set of a user's slots.
func (s *Store) UserKey(user string) string { return s.opts.Prefix + "user:" + user }

// UserAddrKey is the sorted set of a user's slots from one address key.
func (s *Store) UserAddrKey(user, addr string) string {
	return s.opts.Prefix + "useraddr:" + addr + ":" + user
}

// Start clears the slots a previous run of this instance left and starts
// refreshing the leases. An error reaching Redis is returned (the caller
// decides whether to start anyway; the refresher keeps trying).
func (s *Store) Start() error {
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.Timeout)
	n, err := clearScript.Run(ctx, s.opts.Client, []string{s.SlotsKey(s.opts.Instance)}).Int()
	cancel()
	if err != nil {
		s.setUp(false, err)
	} else if n > 0 {
		s.opts.Log.Info("cleared the slots of a previous run", "instance", s.opts.Instance, "slots", n)
	}
	go s.refresher()
	return err
}

// Close stops the refresher. Slots still held stay in Redis until their
// leases expire.
func (s *Store) Close() {
	s.mu.Lock()
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	s.mu.Unlock()
	<-s.done
}

// Up reports whether the last call to Redis succeeded.
func (s *Store) Up() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.up
}

func (s *Store) setUp(up bool, err error) {
	s.mu.Lock()
	changed := s.up != up
	s.up = up
	s.mu.Unlock()
	if !changed {
		return
	}
	if up {
		s.opts.Log.Info("cluster store reachable again: live sessions re-synchronised")
	} else {
		s.opts.Log.Warn("cluster store unreachable", "err", err)
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
	if s.opts.OnState != nil {
		s.opts.OnState(up)
	}
}

func (s *Store) held(slot limits.Slot) held {
	addr := slot.Addr.String()
	member := s.opts.Instance + "/" + slot.ID
	r := Record{User: slot.User, Addr: addr, Instance: s.opts.Instance, Slot: slot.ID, Start: slot.Start,
		UserKey: s.UserKey(slot.User), UserAddrKey: s.UserAddrKey(slot.User, addr)}
	if slot.User == "" { // a connection, counted per address only
		r.UserKey = s.AddrKey(addr)
		r.UserAddrKey = r.UserKey
	}
	b, _ := json.Marshal(r) // no type in Record fails to marshal
	return held{member: member, userKey: r.UserKey, userAddrKey: r.UserAddrKey, record: string(b)}
}

// ErrDown is returned while Redis is known to be unreachable: calls fail
// at once rather than each waiting for the timeout, until the refresher
// reaches Redis again.
var ErrDown = errors.New("redisstore: redis unreachable")

// AdmitUser implements limits.Shared with admitScript.
func (s *Store) AdmitUser(ctx context.Context, slot limits.Slot, perUser, perUserIP int) (bool, []limits.Check, error) {
	if !s.Up() {
		return false, nil, ErrDown
	}
	h := s.held(slot)
	ctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	res, err := admitScript.Run(ctx, s.opts.Client, []string{h.userKey, h.userAddrKey, s.SlotsKey(s.opts.Instance)},
		h.member, perUser, perUserIP, s.opts.Lease.Milliseconds(), h.record).Int64Slice()
	if err != nil || len(res) != 3 {
		if err == nil {
			err = fmt.Errorf("redisstore: admit script returned %v", res)
		}
		s.setUp(false, err)
		return false, nil, err
	}
	checks := []limits.Check{{Limit: "max_connections_per_user", Count: int(res[1]), Max: perUser}}
	if res[2] >= 0 {
		checks = append(checks, limits.Check{Limit: "max_connections_per_user_ip", Count: int(res[2]), Max: perUserIP})
	}
	if res[0] != 1 {
		return false, checks, nil
	}
	s.mu.Lock()
	s.slots[slot.ID] = h
	s.mu.Unlock()
	return true, checks, nil
}

// AddrKey is the sorted set of the connections from one address key.
func (s *Store) AddrKey(addr string) string { return s.opts.Prefix + "addr:" + addr }

// AdmitAddr implements limits.Shared with admitScript, given the
// address's set as both sets (a record's user is then empty).
func (s *Store) AdmitAddr(ctx context.Context, slot limits.Slot, perIP int) (bool, []limits.Check, error) {
	if !s.Up() {
		return false, nil, ErrDown
	}
	h := s.held(slot)
	ctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	res, err := admitScript.Run(ctx, s.opts.Client, []string{h.userKey, h.userAddrKey, s.SlotsKey(s.opts.Instance)},
		h.member, perIP, 0, s.opts.Lease.Milliseconds(), h.record).Int64Slice()
	if err != nil || len(res) != 3 {
		if err == nil {
			err = fmt.Errorf("redisstore: admit script returned %v", res)
		}
		s.setUp(false, err)
		return false, nil, err
	}
	checks := []limits.Check{{Limit: "max_connections_per_ip", Count: int(res[1]), Max: perIP}}
	if res[0] != 1 {
		return false, checks, nil
	}
	s.mu.Lock()
	s.slots[slot.ID] = h
	s.mu.Unlock()
	return true, checks, nil
}

// Adopt implements limits.Shared: the slot is written at the next
// refresh that reaches Redis.
func (s *Store) Adopt(slot limits.Slot) {
	s.mu.Lock()
	s.slots[slot.ID] = s.held(slot)
	s.mu.Unlock()
}

// Release implements limits.Shared with releaseScript. If Redis cannot be
// reached the slot is forgotten here all the same: no refresh renews it,
// so it stops counting when its lease expires.
func (s *Store) Release(slot limits.Slot) {
	s.mu.Lock()
	h, ok := s.slots[slot.ID]
	delete(s.slots, slot.ID)
	up := s.up
	s.mu.Unlock()
	if !ok || !up {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.Timeout)
	defer cancel()
	if err := releaseScript.Run(ctx, s.opts.Client, []string{h.userKey, h.userAddrKey, s.SlotsKey(s.opts.Instance)}, h.member).Err(); err != nil {
		s.setUp(false, err)
	}
}

// Held returns the number of slots this instance holds.
func (s *Store) Held() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.slots)
}

// refreshBatch bounds the slots one script call carries.
const refreshBatch = 1000

// Refresh renews the leases of all the slots this instance holds, and
// writes them again if Redis lost them, in one pipeline (one script call
// per refreshBatch slots).
func (s *Store) Refresh(ctx context.Context) error {
	s.mu.Lock()
	all := make([]held, 0, len(s.slots))
	for _, h := range s.slots {
		all = append(all, h)
	}
	s.mu.Unlock()
	sort.Slice(all, func(i, j int) bool { return all[i].member < all[j].member })
	ctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	lease := strconv.FormatInt(s.opts.Lease.Milliseconds(), 10)
	var err error
	if len(all) == 0 {
		err = s.opts.Client.Ping(ctx).Err()
	} else {
		// refresh sends the whole refresh in one pipeline, each batch of
		// slots a script call (run: EvalSha, or Eval).
		refresh := func(run func(pipe redis.Pipeliner, keys []string, args ...any)) error {
			pipe := s.opts.Client.Pipeline()
			for i := 0; i < len(all); i += refreshBatch {
				batch := all[i:min(i+refreshBatch, len(all))]
				keys := []string{s.SlotsKey(s.opts.Instance)}
				args := []any{lease}
				for _, h := range batch {
					keys = append(keys, h.userKey, h.userAddrKey)
					args = append(args, h.member, h.record)
				}
				run(pipe, keys, args...)
			}
			_, err := pipe.Exec(ctx)
			return err
		}
		err = refresh(func(pipe redis.Pipeliner, keys []string, args ...any) { refreshScript.Run(ctx, pipe, keys, args...) })
		if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			// Redis restarted and lost its script cache: Run's
			// fallback to EVAL does not work in a pipeline.
			err = refresh(func(pipe redis.Pipeliner, keys []string, args ...any) { refreshScript.Eval(ctx, pipe, keys, args...) })
		}
	}
	if err == nil {
		// A slot released while the refresh was on its way was written
		// again by it: release it once more.
		s.mu.Lock()
		live := make(map[string]bool, len(s.slots))
		for _, h := range s.slots {
			live[h.member] = true
		}
		s.mu.Unlock()
		for _, h := range all {
			if !live[h.member] {
				err = releaseScript.Run(ctx, s.opts.Client, []string{h.userKey, h.userAddrKey, s.SlotsKey(s.opts.Instance)}, h.member).Err()
				if err != nil {
					break
				}
			}
		}
	}
	s.setUp(err == nil, err)
	return err
}

// refresher refreshes every Lease/3, and every second while Redis is
// down, to re-synchronise soon after it is back.
func (s *Store) refresher() {
	defer close(s.done)
	every := s.opts.Lease / 3
	for {
		wait := every
		if !s.Up() {
			wait = min(every, time.Second)
		}
		t := time.NewTimer(wait)
		select {
		case <-s.stop:
			t.Stop()
			return
		case <-s.kick:
			t.Stop()
			continue
		case <-t.C:
		}
		s.Refresh(context.Background())
	}
}
