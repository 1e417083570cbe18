package proxy

import "strings"

// pattern is a compiled passthrough or always-forward path pattern: '*'
// matches any run of characters, '/' included; everything else is literal,
// and the pattern must match the whole path.
type pattern struct {
	raw   string
	parts []string // raw split at each '*'; one part: no wildcard
}

func compilePattern(raw string) pattern {
	return pattern{raw: raw, parts: strings.Split(raw, "*")}
}

// match reports whether the whole of path matches p.
func (p pattern) match(path string) bool {
	if len(p.parts) == 1 {
		return path == p.raw
	}
	first, last := p.parts[0], p.parts[len(p.parts)-1]
	if len(path) < len(first)+len(last) || !strings.HasPrefix(path, first) || !strings.HasSuffix(path, last) {
		return false
	}
	// Between the fixed ends, take each middle part at its leftmost
	// occurrence: with '*' the only wildcard, that never loses a match.
	rest := path[len(first) : len(path)-len(last)]
	for _, part := range p.parts[1 : len(p.parts)-1] {
		i := strings.Index(rest, part)
		if i < 0 {
			return false
		}
		rest = rest[i+len(part):]
	}
	return true
}

// patterns is a list of patterns; a path matches it when it matches any.
type patterns []pattern

func compilePatterns(raw []string) patterns {
	ps := make(patterns, len(raw))
	for i, r := range raw {
		ps[i] = compilePattern(r)
	}
	return ps
}

func (ps patterns) match(path string) bool {
	for _, p := range ps {
		if p.match(path) {
			return true
		}
	}
	return false
}
