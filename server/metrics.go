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
}

var _ prometheus.Collector = (*storeCollector)(nil)

func newStoreCollector(s *engine.Store, h *engine.Halts, subs *subscribers, following func() map[string]FollowStatus) *storeCollector {
	db := []string{"db"}
	return &storeCollector{
		store: s, halts: h, subs: subs, following: following,
		txid:        prometheus.NewDesc("litefs_db_txid", "TXID of the database's last committed transaction.", db, nil),
		commits:     prometheus.NewDesc("litefs_db_commit_count", "Transactions committed on this node since it started.", db, nil),
		isPrimary:   prometheus.NewDesc("litefs_is_primary", "1 if this node is the primary, else 0.", nil, nil),
		posPrimary:  prometheus.NewDesc("litefs_db_position_primary", "The primary's TXID of the database, as this node knows it.", db, nil),
		posReplica:  prometheus.NewDesc("litefs_db_position_replica", "This node's TXID of the database; position_primary minus it is the lag in transactions.", db, nil),
		subscribers: prometheus.NewDesc("litefs_subscriber_count", "Replicas streaming from this node (0 unless it is the primary).", nil, nil),
		haltActive:  prometheus.NewDesc("litefs_halt_lock_active", "1 while the database's halt lock is held (granted by this primary, or taken through this replica).", db, nil),
		lag:         prometheus.NewDesc("litefs_lag_seconds", "How far this replica is behind the primary, in time; 0 on the primary.", nil, nil),
	}
}

func (c *storeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.txid, c.commits, c.isPrimary, c.posPrimary, c.posReplica, c.subscribers, c.haltActive, c.lag} {
		ch <- d
	}
}

func (c *storeCollector) Collect(ch chan<- prometheus.Metric) {
	role, _ := c.store.Role()
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
		gauge(c.posReplica, float64(di.Pos.TXID))
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
}
