// Package postgres is the shared storage engine: several Cloudless servers
// use one PostgreSQL database and all serve the etcd API.
//
// Writers serialise on one row (cloudless_meta), so revisions are dense and
// commit in revision order: a watcher that has seen revision N has seen
// every revision before it. Commits are announced with NOTIFY; every
// server LISTENs and reads the new rows, so watch delivery between servers
// takes one notification, not a polling interval.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/cloudless-dev/cloudless/internal/datastore/mvcc"
)

const schemaVersion = 1

const channel = "cloudless_datastore"

var schema = []string{
	`CREATE TABLE IF NOT EXISTS cloudless_meta (
		id int PRIMARY KEY CHECK (id = 1),
		rev bigint NOT NULL,
		compact_rev bigint NOT NULL,
		schema_version int NOT NULL)`,
	`INSERT INTO cloudless_meta (id, rev, compact_rev, schema_version) VALUES (1, 1, 0, ` + strconv.Itoa(schemaVersion) + `) ON CONFLICT (id) DO NOTHING`,
	// Every version of every key, by revision: history and watch events.
	`CREATE TABLE IF NOT EXISTS cloudless_log (
		rev bigint NOT NULL,
		sub int NOT NULL,
		key bytea NOT NULL,
		value bytea,
		create_rev bigint NOT NULL,
		version bigint NOT NULL,
		lease bigint NOT NULL,
		prev_rev bigint NOT NULL,
		deleted boolean NOT NULL,
		PRIMARY KEY (rev, sub))`,
	`CREATE INDEX IF NOT EXISTS cloudless_log_key_rev ON cloudless_log (key, rev)`,
	// The live keys at the current revision: fast reads, counts and lists.
	`CREATE TABLE IF NOT EXISTS cloudless_kv (
		key bytea PRIMARY KEY,
		value bytea NOT NULL,
		create_rev bigint NOT NULL,
		mod_rev bigint NOT NULL,
		version bigint NOT NULL,
		lease bigint NOT NULL)`,
	`CREATE INDEX IF NOT EXISTS cloudless_kv_lease ON cloudless_kv (lease) WHERE lease <> 0`,
	`CREATE TABLE IF NOT EXISTS cloudless_lease (
		id bigint PRIMARY KEY,
		ttl bigint NOT NULL,
		expires_at timestamptz NOT NULL)`,
}

// Engine is an mvcc.Engine over PostgreSQL.
type Engine struct {
	pool *pgxpool.Pool
	log  *slog.Logger

	notifyMu sync.Mutex
	latest   int64
	changes  chan int64

	cancel context.CancelFunc
	done   chan struct{}
}

var _ mvcc.Engine = (*Engine)(nil)

// Open connects, creates the schema if needed, and starts listening for
// other servers' commits.
func Open(ctx context.Context, dsn string, log *slog.Logger) (*Engine, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("parse PostgreSQL URL: %w", err)
	}
	if cfg.MaxConns < 8 {
		cfg.MaxConns = 8
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	e := &Engine{pool: pool, log: log, changes: make(chan int64, 1), done: make(chan struct{})}
	if err := e.migrate(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	lctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	ready := make(chan struct{})
	go e.listen(lctx, ready)
	select {
	case <-ready:
	case <-ctx.Done():
		e.Close()
		return nil, ctx.Err()
	}
	return e, nil
}

func (e *Engine) migrate(ctx context.Context) error {
	// Serialise schema creation between servers starting together.
	tx, err := e.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(7366251977)`); err != nil {
		return fmt.Errorf("lock schema: %w", err)
	}
	for _, s := range schema {
		if _, err := tx.Exec(ctx, s); err != nil {
			return fmt.Errorf("create schema: %w", err)
		}
	}
	var v int
	if err := tx.QueryRow(ctx, `SELECT schema_version FROM cloudless_meta WHERE id = 1`).Scan(&v); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if v != schemaVersion {
		return fmt.Errorf("database schema version %d is not %d: this database was written by another Cloudless version; upgrade this server or use another database", v, schemaVersion)
	}
	return tx.Commit(ctx)
}

// listen follows NOTIFY from every server; after a lost connection it
// reconnects and announces the current revision, so nothing is missed.
func (e *Engine) listen(ctx context.Context, ready chan struct{}) {
	defer close(e.done)
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := e.listenOnce(ctx, ready)
		if ctx.Err() != nil {
			return
		}
		e.log.Warn("lost PostgreSQL notifications; reconnecting", "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func (e *Engine) listenOnce(ctx context.Context, ready chan struct{}) error {
	conn, err := e.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "LISTEN "+channel); err != nil {
		conn.Conn().Close(ctx)
		return err
	}
	defer conn.Conn().Close(context.Background()) // do not return a LISTENing conn to the pool
	var rev int64
	if err := conn.QueryRow(ctx, `SELECT rev FROM cloudless_meta WHERE id = 1`).Scan(&rev); err != nil {
		return err
	}
	e.announce(rev)
	select {
	case <-ready:
	default:
		close(ready)
	}
	for {
		n, err := conn.Conn().WaitForNotification(ctx)
		if err != nil {
			return err
		}
		if rev, err := strconv.ParseInt(n.Payload, 10, 64); err == nil {
			e.announce(rev)
		}
	}
}

func (e *Engine) announce(rev int64) {
	e.notifyMu.Lock()
	defer e.notifyMu.Unlock()
	if rev < e.latest {
		return
	}
	e.latest = rev
	select {
	case <-e.changes:
	default:
	}
	e.changes <- rev
}

// Close stops listening and closes the pool.
func (e *Engine) Close() error {
	if e.cancel != nil {
		e.cancel()
		<-e.done
	}
	e.pool.Close()
	return nil
}

// Changes implements mvcc.Engine.
func (e *Engine) Changes() <-chan int64 { return e.changes }

// Revisions implements mvcc.Engine.
func (e *Engine) Revisions(ctx context.Context) (int64, int64, error) {
	var cur, compacted int64
	err := e.pool.QueryRow(ctx, `SELECT rev, compact_rev FROM cloudless_meta WHERE id = 1`).Scan(&cur, &compacted)
	if err != nil {
		return 0, 0, unavailable("read revisions", err)
	}
	return cur, compacted, nil
}

func unavailable(what string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return fmt.Errorf("%w: PostgreSQL: %s: %v", mvcc.ErrEngineDegraded, what, err)
}

// rangeSQL returns the WHERE clause for an etcd range over column key.
func rangeSQL(key, end []byte, args []any) (string, []any) {
	switch {
	case len(end) == 0:
		return "key = $1", append(args, key)
	case len(end) == 1 && end[0] == 0:
		return "key >= $1", append(args, key)
	default:
		return "key >= $1 AND key < $2", append(args, key, end)
	}
}

// Range implements mvcc.Engine.
func (e *Engine) Range(ctx context.Context, q mvcc.RangeQuery) (mvcc.RangeResult, error) {
	if q.Rev == 0 && !q.CountOnly {
		res, complete, err := e.rangeCurrent(ctx, q)
		if err != nil || complete {
			return res, err
		}
	}
	tx, err := e.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return mvcc.RangeResult{}, unavailable("begin read", err)
	}
	defer tx.Rollback(ctx)
	var cur, compacted int64
	if err := tx.QueryRow(ctx, `SELECT rev, compact_rev FROM cloudless_meta WHERE id = 1`).Scan(&cur, &compacted); err != nil {
		return mvcc.RangeResult{}, unavailable("read revisions", err)
	}
	rev := q.Rev
	if rev == 0 {
		rev = cur
	}
	if rev > cur {
		return mvcc.RangeResult{}, mvcc.ErrFutureRev
	}
	if rev < compacted {
		return mvcc.RangeResult{}, mvcc.ErrCompacted
	}
	where, args := rangeSQL(q.Key, q.End, nil)
	var from string
	if rev == cur {
		from = `(SELECT key, value, create_rev, mod_rev, version, lease FROM cloudless_kv WHERE ` + where + `) t`
	} else {
		args = append(args, rev)
		from = `(SELECT key, value, create_rev, mod_rev, version, lease FROM (
			SELECT DISTINCT ON (key) key, value, create_rev, rev AS mod_rev, version, lease, deleted
			FROM cloudless_log WHERE ` + where + ` AND rev <= $` + strconv.Itoa(len(args)) + `
			ORDER BY key, rev DESC) v WHERE NOT deleted) t`
	}
	res := mvcc.RangeResult{Rev: rev}
	if !q.CountOnly {
		cols := "key, value, create_rev, mod_rev, version, lease"
		if q.KeysOnly {
			cols = "key, NULL::bytea, create_rev, mod_rev, version, lease"
		}
		sql := `SELECT ` + cols + ` FROM ` + from + ` ORDER BY key`
		if q.Limit > 0 {
			sql += ` LIMIT ` + strconv.FormatInt(q.Limit, 10)
		}
		rows, err := tx.Query(ctx, sql, args...)
		if err != nil {
			return mvcc.RangeResult{}, unavailable("range", err)
		}
		for rows.Next() {
			kv := &mvccpb.KeyValue{}
			if err := rows.Scan(&kv.Key, &kv.Value, &kv.CreateRevision, &kv.ModRevision, &kv.Version, &kv.Lease); err != nil {
				rows.Close()
				return mvcc.RangeResult{}, unavailable("range", err)
			}
			res.KVs = append(res.KVs, kv)
		}
		if err := rows.Err(); err != nil {
			return mvcc.RangeResult{}, unavailable("range", err)
		}
		res.Count = int64(len(res.KVs))
	}
	if q.CountOnly || (q.Limit > 0 && int64(len(res.KVs)) == q.Limit) {
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM `+from, args...).Scan(&res.Count); err != nil {
			return mvcc.RangeResult{}, unavailable("count", err)
		}
	}
	return res, nil
}

// rangeCurrent reads live keys at the current revision in one statement
// (one snapshot, one round trip). It reports incomplete when the limit was
// reached, since the total count then needs a second query in the same
// snapshot.
func (e *Engine) rangeCurrent(ctx context.Context, q mvcc.RangeQuery) (mvcc.RangeResult, bool, error) {
	where, args := rangeSQL(q.Key, q.End, nil)
	cols := "key, value, create_rev, mod_rev, version, lease"
	if q.KeysOnly {
		cols = "key, NULL::bytea AS value, create_rev, mod_rev, version, lease"
	}
	limit := ""
	if q.Limit > 0 {
		limit = " LIMIT " + strconv.FormatInt(q.Limit, 10)
	}
	rows, err := e.pool.Query(ctx, `SELECT m.rev, t.key, t.value, t.create_rev, t.mod_rev, t.version, t.lease
		FROM cloudless_meta m LEFT JOIN LATERAL (
			SELECT `+cols+` FROM cloudless_kv WHERE `+where+` ORDER BY key`+limit+`) t ON true
		WHERE m.id = 1 ORDER BY t.key`, args...)
	if err != nil {
		return mvcc.RangeResult{}, false, unavailable("range", err)
	}
	defer rows.Close()
	var res mvcc.RangeResult
	for rows.Next() {
		var key, value []byte
		var create, mod, version, lease *int64
		if err := rows.Scan(&res.Rev, &key, &value, &create, &mod, &version, &lease); err != nil {
			return mvcc.RangeResult{}, false, unavailable("range", err)
		}
		if key == nil {
			continue
		}
		res.KVs = append(res.KVs, &mvccpb.KeyValue{Key: key, Value: value, CreateRevision: *create, ModRevision: *mod, Version: *version, Lease: *lease})
	}
	if err := rows.Err(); err != nil {
		return mvcc.RangeResult{}, false, unavailable("range", err)
	}
	res.Count = int64(len(res.KVs))
	return res, q.Limit == 0 || int64(len(res.KVs)) < q.Limit, nil
}

// Update implements mvcc.Engine.
func (e *Engine) Update(ctx context.Context, fn func(mvcc.Tx) error) (int64, error) {
	tx, err := e.pool.Begin(ctx)
	if err != nil {
		return 0, unavailable("begin write", err)
	}
	defer tx.Rollback(context.Background())
	// Take the writers' lock and the next revision in one statement; a
	// transaction that ends up writing nothing rolls the increment back.
	var next int64
	if err := tx.QueryRow(ctx, `UPDATE cloudless_meta SET rev = rev + 1 WHERE id = 1 RETURNING rev`).Scan(&next); err != nil {
		return 0, unavailable("lock revision", err)
	}
	t := &ptx{ctx: ctx, tx: tx, rev: next}
	if err := fn(t); err != nil {
		return 0, err
	}
	if t.sub == 0 {
		if t.leaseOnly {
			// Lease changes are kept, at the unchanged revision.
			if _, err := tx.Exec(ctx, `UPDATE cloudless_meta SET rev = rev - 1 WHERE id = 1`); err != nil {
				return 0, unavailable("restore revision", err)
			}
			if err := tx.Commit(ctx); err != nil {
				return 0, unavailable("commit lease change", err)
			}
		}
		return next - 1, nil // deferred Rollback undoes the increment
	}
	rev := next
	if _, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, channel, strconv.FormatInt(rev, 10)); err != nil {
		return 0, unavailable("notify", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, unavailable(fmt.Sprintf("commit revision %d", rev), err)
	}
	e.announce(rev)
	return rev, nil
}

// Events implements mvcc.Engine. Revisions are dense, so limit revisions
// hold at least limit events and the answer ends on a whole revision.
func (e *Engine) Events(ctx context.Context, from int64, limit int) ([]mvcc.Event, error) {
	// One statement, so one snapshot and one round trip: the compacted
	// revision comes with the events (a single row of NULLs if none).
	rows, err := e.pool.Query(ctx, `
		SELECT m.compact_rev, e.rev, e.key, e.value, e.create_rev, e.version, e.lease, e.deleted,
			e.p_rev, e.p_value, e.p_create, e.p_version, e.p_lease, e.p_deleted
		FROM cloudless_meta m LEFT JOIN LATERAL (
			SELECT l.rev, l.sub, l.key, l.value, l.create_rev, l.version, l.lease, l.deleted,
				p.rev AS p_rev, p.value AS p_value, p.create_rev AS p_create, p.version AS p_version,
				p.lease AS p_lease, p.deleted AS p_deleted
			FROM cloudless_log l
			LEFT JOIN cloudless_log p ON p.key = l.key AND p.rev = l.prev_rev AND l.prev_rev <> 0
			WHERE l.rev >= $1 AND l.rev < $2) e ON true
		WHERE m.id = 1
		ORDER BY e.rev, e.sub`, from, from+int64(limit))
	if err != nil {
		return nil, unavailable("read events", err)
	}
	defer rows.Close()
	var out []mvcc.Event
	var compacted int64
	for rows.Next() {
		var (
			rev, create, version, lease     *int64
			key, value                      []byte
			deleted                         *bool
			pRev, pCreate, pVersion, pLease *int64
			pValue                          []byte
			pDeleted                        *bool
		)
		if err := rows.Scan(&compacted, &rev, &key, &value, &create, &version, &lease, &deleted,
			&pRev, &pValue, &pCreate, &pVersion, &pLease, &pDeleted); err != nil {
			return nil, unavailable("read events", err)
		}
		if rev == nil {
			continue // no events
		}
		ev := mvcc.Event{Type: mvccpb.PUT, KV: &mvccpb.KeyValue{Key: key, Value: value, CreateRevision: *create, ModRevision: *rev, Version: *version, Lease: *lease}}
		if *deleted {
			ev.Type = mvccpb.DELETE
			ev.KV = &mvccpb.KeyValue{Key: key, ModRevision: *rev}
		}
		if pRev != nil && !*pDeleted {
			ev.PrevKV = &mvccpb.KeyValue{Key: key, Value: pValue, CreateRevision: *pCreate, ModRevision: *pRev, Version: *pVersion, Lease: *pLease}
		}
		out = append(out, ev)
	}
	if err := rows.Err(); err != nil {
		return nil, unavailable("read events", err)
	}
	if from < compacted {
		return nil, mvcc.ErrCompacted
	}
	return out, nil
}

// Compact implements mvcc.Engine. The compacted revision is raised under
// the writers' lock; old rows are then deleted without holding it, which
// is safe with any number of servers because only rows below the
// compacted revision that a newer version at or below it supersedes
// are touched, as etcd does.
func (e *Engine) Compact(ctx context.Context, rev int64) error {
	tag, err := e.pool.Exec(ctx, `UPDATE cloudless_meta SET compact_rev = $1 WHERE id = 1 AND compact_rev < $1 AND rev >= $1`, rev)
	if err != nil {
		return unavailable("record compacted revision", err)
	}
	if tag.RowsAffected() == 0 {
		return mvcc.ErrCompacted
	}
	_, err = e.pool.Exec(ctx, `
		DELETE FROM cloudless_log l
		WHERE l.rev < $1 AND (l.deleted OR EXISTS (
			SELECT 1 FROM cloudless_log n WHERE n.key = l.key AND n.rev > l.rev AND n.rev <= $1))`, rev)
	if err != nil {
		return unavailable("delete compacted history", err)
	}
	return nil
}

// Size implements mvcc.Engine.
func (e *Engine) Size(ctx context.Context) (int64, error) {
	var n int64
	err := e.pool.QueryRow(ctx, `SELECT pg_total_relation_size('cloudless_log') + pg_total_relation_size('cloudless_kv') + pg_total_relation_size('cloudless_lease')`).Scan(&n)
	if err != nil {
		return 0, unavailable("read size", err)
	}
	return n, nil
}

// LeaseRenew implements mvcc.Engine.
func (e *Engine) LeaseRenew(ctx context.Context, id int64) (int64, error) {
	var ttl int64
	err := e.pool.QueryRow(ctx, `UPDATE cloudless_lease SET expires_at = now() + ttl * interval '1 second' WHERE id = $1 RETURNING ttl`, id).Scan(&ttl)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, mvcc.ErrLeaseNotFound
	}
	if err != nil {
		return 0, unavailable("renew lease", err)
	}
	return ttl, nil
}

// LeaseTimeToLive implements mvcc.Engine.
func (e *Engine) LeaseTimeToLive(ctx context.Context, id int64) (int64, int64, error) {
	var ttl int64
	var left float64
	err := e.pool.QueryRow(ctx, `SELECT ttl, greatest(extract(epoch FROM expires_at - now()), 0)::float8 FROM cloudless_lease WHERE id = $1`, id).Scan(&ttl, &left)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, 0, mvcc.ErrLeaseNotFound
	}
	if err != nil {
		return 0, 0, unavailable("read lease", err)
	}
	return ttl, int64(left + 0.5), nil
}

// Leases implements mvcc.Engine.
func (e *Engine) Leases(ctx context.Context) ([]int64, error) {
	return e.ids(ctx, `SELECT id FROM cloudless_lease`)
}

// ExpiredLeases implements mvcc.Engine.
func (e *Engine) ExpiredLeases(ctx context.Context) ([]int64, error) {
	return e.ids(ctx, `SELECT id FROM cloudless_lease WHERE expires_at < now()`)
}

func (e *Engine) ids(ctx context.Context, sql string) ([]int64, error) {
	rows, err := e.pool.Query(ctx, sql)
	if err != nil {
		return nil, unavailable("list leases", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, unavailable("list leases", err)
	}
	return ids, nil
}
