package server

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pagewire/pagewire"
)

// storeCollector reports positions at scrape time, under the metric names
// LiteFS users' dashboards use (DESIGN §8).
type storeCollector struct {
	store     *Store
	txid      *prometheus.Desc
	commits   *prometheus.Desc
	isPrimary *prometheus.Desc
}

var _ prometheus.Collector = (*storeCollector)(nil)

func newStoreCollector(s *Store) *storeCollector {
	return &storeCollector{
		store:     s,
		txid:      prometheus.NewDesc("litefs_db_txid", "TXID of the database's last committed transaction.", []string{"db"}, nil),
		commits:   prometheus.NewDesc("litefs_db_commit_count", "Transactions committed on this node since it started.", []string{"db"}, nil),
		isPrimary: prometheus.NewDesc("litefs_is_primary", "1 if this node is the primary, else 0.", nil, nil),
	}
}

func (c *storeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.txid
	ch <- c.commits
	ch <- c.isPrimary
}

func (c *storeCollector) Collect(ch chan<- prometheus.Metric) {
	for _, di := range c.store.Databases() {
		ch <- prometheus.MustNewConstMetric(c.txid, prometheus.GaugeValue, float64(di.Pos.TXID), di.Name)
		ch <- prometheus.MustNewConstMetric(c.commits, prometheus.CounterValue, float64(di.Commits), di.Name)
	}
	role, _ := c.store.Role()
	primary := 0.0
	if role == pagewire.RolePrimary {
		primary = 1
	}
	ch <- prometheus.MustNewConstMetric(c.isPrimary, prometheus.GaugeValue, primary)
}
