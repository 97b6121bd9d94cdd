package redisstore

import (
	"context"
	"net/netip"
	"strconv"
	"time"

	"github.com/imapguard/imapguard/limits"
	"github.com/redis/go-redis/v9"
)

// Auth keeps the brute-force state of limits.Tracker in Redis
// (limits.SharedAuth): a hash per address key and per user,
// imapguard:authaddr:<addr> and imapguard:authuser:<user>, with the
// fields count, penalty and last (Unix ms), expiring auth_failure_window
// + auth_failure_block after the last failure; and a key per known
// (user, address) pair, imapguard:known:<addr>:<user>, kept KnownTTL.
type Auth struct {
	Client redis.UniversalClient
	Prefix string // "" means "imapguard:"
	// KnownTTL is how long a (user, address) pair that logged in is
	// remembered; 0 means 30 days.
	KnownTTL time.Duration
}

var _ limits.SharedAuth = (*Auth)(nil)

func (s *Auth) prefix() string {
	if s.Prefix == "" {
		return "imapguard:"
	}
	return s.Prefix
}

func (s *Auth) keys(addr netip.Prefix, user string) (a, u, known string) {
	p := s.prefix()
	return p + "authaddr:" + addr.String(), p + "authuser:" + user, p + "known:" + addr.String() + ":" + user
}

// authFailedScript: KEYS = address record ("" when not tracked is not
// allowed: the caller passes trackAddr), user record; ARGV = now ms,
// window ms, block ms, max per address, max per user, trackAddr 0/1. A
// record is first forgotten if its window has passed and it does not
// block (Tracker.current), then counted.
var authFailedScript = redis.NewScript(`
local now, window, block = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local function bump(key, max)
  local f = redis.call('HMGET', key, 'count', 'penalty', 'last')
  local c, p, l = tonumber(f[1]) or 0, tonumber(f[2]) or 0, tonumber(f[3]) or 0
  local blocked = max > 0 and c >= max and now < l + block
  if now - l >= window and not blocked then c = 0; p = 0 end
  redis.call('HSET', key, 'count', c + 1, 'penalty', p + 1, 'last', now)
  redis.call('PEXPIRE', key, window + block)
end
if ARGV[6] == '1' then bump(KEYS[1], tonumber(ARGV[4])) end
bump(KEYS[2], tonumber(ARGV[5]))
return 1
`)

// authSucceededScript: KEYS = address record, user record, known pair;
// ARGV = now ms, window ms, block ms, max per address, trackAddr 0/1,
// known ttl ms.
var authSucceededScript = redis.NewScript(`
local now, window, block, max = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('DEL', KEYS[2])
redis.call('SET', KEYS[3], '1', 'PX', ARGV[6])
if ARGV[5] ~= '1' then return 1 end
local f = redis.call('HMGET', KEYS[1], 'count', 'penalty', 'last')
if not f[3] then return 1 end
local c, l = tonumber(f[1]) or 0, tonumber(f[3]) or 0
local blocked = max > 0 and c >= max and now < l + block
if now - l >= window and not blocked then c = 0 end
if c == 0 then
  redis.call('DEL', KEYS[1])
else
  redis.call('HSET', KEYS[1], 'count', c, 'penalty', 0)
end
return 1
`)

// Load implements limits.SharedAuth in one pipelined round trip.
func (s *Auth) Load(ctx context.Context, addr netip.Prefix, trackAddr bool, user string) (a, u limits.AuthRecord, known bool, err error) {
	ak, uk, kk := s.keys(addr, user)
	pipe := s.Client.Pipeline()
	var ac *redis.SliceCmd
	if trackAddr {
		ac = pipe.HMGet(ctx, ak, "count", "penalty", "last")
	}
	uc := pipe.HMGet(ctx, uk, "count", "penalty", "last")
	kc := pipe.Exists(ctx, kk)
	if _, err := pipe.Exec(ctx); err != nil {
		return a, u, false, err
	}
	if ac != nil {
		a = record(ac.Val())
	}
	return a, record(uc.Val()), kc.Val() == 1, nil
}

func record(v []any) limits.AuthRecord {
	n := func(i int) int64 {
		s, _ := v[i].(string)
		x, _ := strconv.ParseInt(s, 10, 64)
		return x
	}
	var r limits.AuthRecord
	if len(v) != 3 || v[2] == nil {
		return r
	}
	r.Count, r.Penalty, r.Last = int(n(0)), int(n(1)), time.UnixMilli(n(2))
	return r
}

func flag(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// Failed implements limits.SharedAuth.
func (s *Auth) Failed(ctx context.Context, addr netip.Prefix, trackAddr bool, user string, now time.Time, o limits.AuthOptions) error {
	ak, uk, _ := s.keys(addr, user)
	return authFailedScript.Run(ctx, s.Client, []string{ak, uk}, now.UnixMilli(), o.Window.Milliseconds(),
		o.Block.Milliseconds(), o.MaxPerIP, o.MaxPerUser, flag(trackAddr)).Err()
}

// Succeeded implements limits.SharedAuth.
func (s *Auth) Succeeded(ctx context.Context, addr netip.Prefix, trackAddr bool, user string, now time.Time, o limits.AuthOptions) error {
	ak, uk, kk := s.keys(addr, user)
	ttl := s.KnownTTL
	if ttl <= 0 {
		ttl = 30 * 24 * time.Hour
	}
	return authSucceededScript.Run(ctx, s.Client, []string{ak, uk, kk}, now.UnixMilli(), o.Window.Milliseconds(),
		o.Block.Milliseconds(), o.MaxPerIP, flag(trackAddr), ttl.Milliseconds()).Err()
}
