package server

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pagewire/pagewire"
	"github.com/pagewire/pagewire/engine"
)

// storeCollector reports positions, replicas and halt locks at scrape
// time, under the metric names LiteFS users' dashboards use (DESIGN §8).
type storeCollector struct {
	store     *engine.Store
	halts     *engine.Halts
	subs      *subscribers
	following func() map[string]FollowStatus

	txid, commits, isPrimary *prometheus.Desc
	posPrimary, posReplica   *prometheus.Desc
	subscribers, haltActive  *prometheus.Desc
	lag                      *prometheus.Desc
	epoch, roleChanges       *prometheus.Desc
	// synchronous replication (engine.SyncStats)
	syncWaits, syncTimeouts, syncWaitSeconds, syncWaiting, syncDegraded, syncUnacked *prometheus.Desc
}

var _ prometheus.Collector = (*storeCollector)(nil)

func newStoreCollector(s *engine.Store, h *engine.Halts, subs *subscribers, following func() map[string]FollowStatus) *storeCollector {
	db := []string{"db"}
	return &storeCollector{
		store: s, halts: h, subs: subs, following: following,
		txid:       prometheus.NewDesc("litefs_db_txid", "TXID of the database's last committed transaction.", db, nil),
		commits:    prometheus.NewDesc("litefs_db_commit_count", "Transactions committed on this node since it started.", db, nil),
		isPrimary:  prometheus.NewDesc("litefs_is_primary", "1 if this node is the primary, else 0.", nil, nil),
		posPrimary: prometheus.NewDesc("litefs_db_position_primary", "The primary's TXID of the database, as this node knows it.", db, nil),
		posReplica: prometheus.NewDesc("litefs_db_position_replica",
			"With replica=\"\": this node's TXID of the database (position_primary minus it is the lag in transactions); on the primary, with replica=HOSTNAME: the TXID that replica acknowledged having applied.",
			[]string{"db", "replica"}, nil),
		subscribers: prometheus.NewDesc("litefs_subscriber_count", "Replicas streaming from this node (0 unless it is the primary).", nil, nil),
		haltActive:  prometheus.NewDesc("litefs_halt_lock_active", "1 while the database's halt lock is held (granted by this primary, or taken through this replica).", db, nil),
		lag:         prometheus.NewDesc("litefs_lag_seconds", "How far this replica is behind the primary, in time; 0 on the primary.", nil, nil),
		epoch:       prometheus.NewDesc("pagewire_lease_epoch", "The lease epoch of this node's role: it grows at every change of primary (failover or handoff).", nil, nil),
		roleChanges: prometheus.NewDesc("pagewire_role_changes_total", "Times this node became the primary (role=\"primary\") or a replica (role=\"replica\") since it started.", []string{"role"}, nil),

		syncWaits:       prometheus.NewDesc("pagewire_sync_replication_waits_total", "Commits that waited for replicas' acknowledgements (replication.sync-replicas).", nil, nil),
		syncTimeouts:    prometheus.NewDesc("pagewire_sync_replication_timeouts_total", "Commits that returned after replication.sync-timeout without enough replicas' acknowledgements.", nil, nil),
		syncWaitSeconds: prometheus.NewDesc("pagewire_sync_replication_wait_seconds_total", "Time commits spent waiting for replicas' acknowledgements, in all.", nil, nil),
		syncWaiting:     prometheus.NewDesc("pagewire_sync_replication_waiting", "Commits waiting for replicas' acknowledgements now.", nil, nil),
		syncUnacked: prometheus.NewDesc("pagewire_sync_replication_unacknowledged_total",
			"Commits that returned before replicas acknowledged them because their database switched from synchronous=FULL to NORMAL (the wait was to be in an fsync that never came).", nil, nil),
		syncDegraded: prometheus.NewDesc("pagewire_sync_replication_degraded", "1 while the database's commits return without waiting for replicas, after a sync-timeout, until enough replicas catch up.", db, nil),
	}
}

func (c *storeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.txid, c.commits, c.isPrimary, c.posPrimary, c.posReplica, c.subscribers, c.haltActive, c.lag, c.epoch, c.roleChanges,
		c.syncWaits, c.syncTimeouts, c.syncWaitSeconds, c.syncWaiting, c.syncDegraded, c.syncUnacked} {
		ch <- d
	}
}

func (c *storeCollector) Collect(ch chan<- prometheus.Metric) {
	role, _, epoch := c.store.RoleEpoch()
	isPrimary := role == pagewire.RolePrimary
	var following map[string]FollowStatus
	if !isPrimary && c.following != nil {
		following = c.following()
	}

	// Per database: its position, the primary's, its commits, and whether it is halted.
	lag := 0.0
	for _, di := range c.store.Databases() {
		gauge := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, di.Name)
		}
		gauge(c.txid, float64(di.Pos.TXID))
		ch <- prometheus.MustNewConstMetric(c.commits, prometheus.CounterValue, float64(di.Commits), di.Name)
		primaryTXID := di.Pos.TXID
		if !isPrimary {
			fs := following[di.Name]
			primaryTXID = max(fs.PrimaryTXID, di.Pos.TXID)
			lag = max(lag, fs.Lag.Seconds())
		}
		gauge(c.posPrimary, float64(primaryTXID))
		ch <- prometheus.MustNewConstMetric(c.posReplica, prometheus.GaugeValue, float64(di.Pos.TXID), di.Name, "")
		if isPrimary {
			// What each replica acknowledged having applied.
			for _, ri := range c.subs.replicas(di.Name, di.Pos.TXID) {
				ch <- prometheus.MustNewConstMetric(c.posReplica, prometheus.GaugeValue, float64(ri.TXID), di.Name, ri.Hostname)
			}
		}
		halted := 0.0
		if _, ok := c.halts.Held(di.Name); ok {
			halted = 1
		}
		gauge(c.haltActive, halted)
	}

	// Node-wide: the role, the subscribers, and the largest lag.
	primary := 0.0
	if isPrimary {
		primary = 1
	}
	ch <- prometheus.MustNewConstMetric(c.isPrimary, prometheus.GaugeValue, primary)
	ch <- prometheus.MustNewConstMetric(c.subscribers, prometheus.GaugeValue, float64(c.subs.count()))
	ch <- prometheus.MustNewConstMetric(c.lag, prometheus.GaugeValue, lag)
	ch <- prometheus.MustNewConstMetric(c.epoch, prometheus.GaugeValue, float64(epoch))
	toPrimary, toReplica := c.store.RoleChanges()
	ch <- prometheus.MustNewConstMetric(c.roleChanges, prometheus.CounterValue, float64(toPrimary), "primary")
	ch <- prometheus.MustNewConstMetric(c.roleChanges, prometheus.CounterValue, float64(toReplica), "replica")

	// Synchronous replication.
	st := c.store.SyncStats()
	ch <- prometheus.MustNewConstMetric(c.syncWaits, prometheus.CounterValue, float64(st.Waits))
	ch <- prometheus.MustNewConstMetric(c.syncTimeouts, prometheus.CounterValue, float64(st.Timeouts))
	ch <- prometheus.MustNewConstMetric(c.syncWaitSeconds, prometheus.CounterValue, st.WaitSeconds)
	ch <- prometheus.MustNewConstMetric(c.syncWaiting, prometheus.GaugeValue, float64(st.Waiting))
	ch <- prometheus.MustNewConstMetric(c.syncUnacked, prometheus.CounterValue, float64(st.Unacknowledged))
	degraded := map[string]bool{}
	for _, db := range st.Degraded {
		degraded[db] = true
	}
	for _, di := range c.store.Databases() {
		v := 0.0
		if degraded[di.Name] {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(c.syncDegraded, prometheus.GaugeValue, v, di.Name)
	}
}
