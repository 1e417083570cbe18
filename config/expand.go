package config

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Expand replaces environment references in s, as LiteFS does for litefs.yml,
// and returns the result. getenv looks variables up; nil means os.Getenv.
//
//   - $VAR and ${VAR} become VAR's value ("" when unset). A bare $VAR name
//     starts with a letter or '_' and goes on with letters, digits and '_'.
//   - ${VAR:-default} becomes VAR's value, or default when VAR is unset or
//     empty. default is expanded in turn and ends at the first '}'.
//   - ${A == B} and ${A != B} become "true" or "false". Each operand is a
//     variable name or a string literal in single or double quotes ('ord',
//     "ord"); literals have no escapes. Spaces around operands are allowed.
//   - $$ becomes a single $. A $ followed by anything else is kept as is.
//
// A ${ must be closed on the same line. An unclosed ${ or an expression of
// another form is an *Error that names the line.
func Expand(s string, getenv func(string) string) (string, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	if !strings.Contains(s, "$") {
		return s, nil
	}
	e := expander{s: s, getenv: getenv}
	return e.text(false)
}

// expander is the state of one Expand call: a recursive-descent scanner over s.
type expander struct {
	s      string
	i      int // next byte to read
	getenv func(string) string
}

// text expands from e.i to the end of the input. When inBrace is set it is
// reading the default of ${VAR:-default}: it stops before the first '}' and
// fails at the end of the line.
func (e *expander) text(inBrace bool) (string, error) {
	var b strings.Builder
	for e.i < len(e.s) {
		stops := "$"
		if inBrace {
			stops = "$}\n"
		}

		// Find the next stop; without one, the rest is plain text.
		j := strings.IndexAny(e.s[e.i:], stops)
		if j < 0 {
			b.WriteString(e.s[e.i:])
			e.i = len(e.s)
			break
		}

		// Copy the plain text up to the stop; a '}' or newline ends a brace's text.
		b.WriteString(e.s[e.i : e.i+j])
		e.i += j
		switch e.s[e.i] {
		case '}', '\n':
			return b.String(), nil // the caller checks for its '}'
		}

		// e.s[e.i] is '$'.
		start := e.i
		e.i++
		switch {
		case e.i == len(e.s):
			b.WriteByte('$')
		case e.s[e.i] == '$':
			b.WriteByte('$')
			e.i++
		case e.s[e.i] == '{':
			e.i++
			v, err := e.brace(start)
			if err != nil {
				return "", err
			}
			b.WriteString(v)
		case isNameStart(e.s[e.i]):
			b.WriteString(e.getenv(e.name()))
		default:
			b.WriteByte('$') // "$5", "$ ", "$-": not a reference
		}
	}
	return b.String(), nil
}

// brace reads the rest of a ${...} form that started at start, with e.i just
// after the '{', and returns its value.
func (e *expander) brace(start int) (string, error) {
	e.space()
	lhs, lhsQuoted, ok := e.operand()
	if !ok {
		return "", e.badExpr(start)
	}

	// ${name:-default}: the default if the variable is empty or unset.
	if !lhsQuoted && strings.HasPrefix(e.s[e.i:], ":-") {
		e.i += len(":-")
		def, err := e.text(true)
		if err != nil {
			return "", err
		}
		if e.i == len(e.s) || e.s[e.i] != '}' {
			return "", e.unclosed(start)
		}
		e.i++
		if v := e.getenv(lhs); v != "" {
			return v, nil
		}
		return def, nil
	}

	// ${name}: the variable's value.
	e.space()
	if e.i < len(e.s) && e.s[e.i] == '}' && !lhsQuoted {
		e.i++
		return e.getenv(lhs), nil
	}

	// ${a == b} or ${a != b}: "true" or "false".
	var equal bool
	switch {
	case strings.HasPrefix(e.s[e.i:], "=="):
		equal = true
	case strings.HasPrefix(e.s[e.i:], "!="):
		equal = false
	default:
		return "", e.badExpr(start)
	}
	e.i += 2
	e.space()
	rhs, rhsQuoted, ok := e.operand()
	if !ok {
		return "", e.badExpr(start)
	}
	e.space()
	if e.i == len(e.s) || e.s[e.i] != '}' {
		return "", e.badExpr(start)
	}
	e.i++

	// Compare the operands: unquoted ones are variables.
	if !lhsQuoted {
		lhs = e.getenv(lhs)
	}
	if !rhsQuoted {
		rhs = e.getenv(rhs)
	}
	return strconv.FormatBool((lhs == rhs) == equal), nil
}

// operand reads a variable name (letters, digits and '_', as LiteFS's \w+)
// or a quoted literal. quoted reports a literal, whose text is returned
// without its quotes.
func (e *expander) operand() (s string, quoted, ok bool) {
	if e.i == len(e.s) {
		return "", false, false
	}
	if q := e.s[e.i]; q == '\'' || q == '"' {
		end := strings.IndexAny(e.s[e.i+1:], string(q)+"\n")
		if end < 0 || e.s[e.i+1+end] != q {
			return "", false, false
		}
		s = e.s[e.i+1 : e.i+1+end]
		e.i += end + 2
		return s, true, true
	}
	s = e.name()
	return s, false, s != ""
}

// name reads a run of letters, digits and '_'.
func (e *expander) name() string {
	j := e.i
	for j < len(e.s) && isNameByte(e.s[j]) {
		j++
	}
	s := e.s[e.i:j]
	e.i = j
	return s
}

// space skips spaces and tabs.
func (e *expander) space() {
	for e.i < len(e.s) && (e.s[e.i] == ' ' || e.s[e.i] == '\t') {
		e.i++
	}
}

// badExpr is the error for a ${...} at start that has no valid form. If the
// line has no '}' after start, the form is reported as unclosed instead.
func (e *expander) badExpr(start int) error {
	line := e.s[start:]
	if nl := strings.IndexByte(line, '\n'); nl >= 0 {
		line = line[:nl]
	}
	end := strings.IndexByte(line, '}')
	if end < 0 {
		return e.unclosed(start)
	}
	return &Error{
		Line: e.lineAt(start),
		Msg: fmt.Sprintf("cannot expand %q: use ${VAR}, ${VAR:-default}, ${A == B} or ${A != 'text'}, or $$ for a literal $",
			line[:end+1]),
	}
}

// unclosed is the error for a ${ at start with no closing '}' on its line.
func (e *expander) unclosed(start int) error {
	line := e.s[start:]
	if nl := strings.IndexByte(line, '\n'); nl >= 0 {
		line = line[:nl]
	}
	return &Error{
		Line: e.lineAt(start),
		Msg:  fmt.Sprintf(`%q has no closing "}" on its line: add one, or write $$ for a literal $`, line),
	}
}

// lineAt returns the 1-based line number of byte offset i.
func (e *expander) lineAt(i int) int {
	return 1 + strings.Count(e.s[:i], "\n")
}

func isNameStart(c byte) bool {
	return c == '_' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

func isNameByte(c byte) bool {
	return isNameStart(c) || '0' <= c && c <= '9'
}
