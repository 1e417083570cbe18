package config

import (
	"errors"
	"strings"
	"testing"
)

func TestExpand(t *testing.T) {
	getenv := env(map[string]string{
		"FLY_REGION":     "ord",
		"PRIMARY_REGION": "ord",
		"OTHER_REGION":   "fra",
		"APP":            "myapp",
		"EMPTY":          "",
		"DOLLAR":         "$HOME",
		"_X1":            "x1",
	})
	for _, tt := range []struct {
		name string
		in   string
		want string
	}{
		{"NoReference", "fuse:\n  dir: /litefs\n", "fuse:\n  dir: /litefs\n"},
		{"Bare", "key: litefs/$APP", "key: litefs/myapp"},
		{"BareStopsAtNonName", "$APP.internal", "myapp.internal"},
		{"BareUnderscoreDigits", "$_X1-", "x1-"},
		{"Braced", "${APP}x", "myappx"},
		{"BracedSpaces", "${ APP }", "myapp"},
		{"Unset", "[$NOPE][${NOPE}]", "[][]"},
		{"ValueNotExpandedAgain", "${DOLLAR}", "$HOME"},
		{"DefaultWhenUnset", "${NOPE:-/litefs}", "/litefs"},
		{"DefaultWhenEmpty", "${EMPTY:-fallback}", "fallback"},
		{"DefaultNotUsed", "${APP:-fallback}", "myapp"},
		{"EmptyDefault", "${NOPE:-}", ""},
		{"DefaultWithSpaces", "${NOPE:-a b }", "a b "},
		{"DefaultExpanded", "${NOPE:-${APP}-db}", "myapp-db"},
		{"DefaultWithDollars", "${NOPE:-$$5}", "$5"},
		{"VarsEqual", "${FLY_REGION == PRIMARY_REGION}", "true"},
		{"VarsNotEqual", "${FLY_REGION == OTHER_REGION}", "false"},
		{"VarsInequality", "${FLY_REGION != OTHER_REGION}", "true"},
		{"NoSpaces", "${FLY_REGION==PRIMARY_REGION}", "true"},
		{"ExtraSpaces", "${  FLY_REGION   !=\tPRIMARY_REGION  }", "false"},
		{"SingleQuoted", "${FLY_REGION == 'ord'}", "true"},
		{"DoubleQuoted", `${FLY_REGION != "ord"}`, "false"},
		{"QuotedLeft", `${'fra' == OTHER_REGION}`, "true"},
		{"TwoLiterals", `${'a' == "a"}`, "true"},
		{"LiteralWithBrace", "${APP == 'my}app'}", "false"},
		{"LiteralWithDollar", "${APP != '$APP'}", "true"},
		{"EmptyLiteral", "${NOPE == ''}", "true"},
		{"UnsetVsEmpty", "${NOPE == EMPTY}", "true"},
		{"DoubleDollar", "pa$$word", "pa$word"},
		{"DoubleDollarBrace", "$${APP}", "${APP}"},
		{"FourDollars", "$$$$", "$$"},
		{"TrailingDollar", "cost: 5$", "cost: 5$"},
		{"DollarDigit", "$5 and $ x", "$5 and $ x"},
		{"Several", "${APP}: ${FLY_REGION == 'ord'} $APP", "myapp: true myapp"},
		{"Multiline", "a: $APP\nb: ${NOPE:-x}\n", "a: myapp\nb: x\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Expand(tt.in, getenv)
			if err != nil {
				t.Fatalf("Expand: %v", err)
			}
			if got != tt.want {
				t.Fatalf("Expand(%q)=%q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestExpand_Error(t *testing.T) {
	for _, tt := range []struct {
		name string
		in   string
		line int
		want string
	}{
		{"Unclosed", "a: 1\nb: ${APP\n", 2, `"${APP" has no closing "}"`},
		{"UnclosedAtEnd", "${", 1, `"${" has no closing "}"`},
		{"ClosedOnNextLine", "a: ${APP\n}", 1, "has no closing"},
		{"UnclosedDefault", "x: ${A:-b\n", 1, "has no closing"},
		{"UnclosedLiteral", "${A == 'x}", 1, `cannot expand "${A == 'x}"`},
		{"Empty", "${}", 1, `cannot expand "${}"`},
		{"BadOperator", "\n\n${A === B}", 3, `cannot expand "${A === B}"`},
		{"MissingOperand", "${A == }", 1, "cannot expand"},
		{"LiteralAlone", "${'a'}", 1, "cannot expand"},
		{"BashForm", "${A-b}", 1, "cannot expand"},
		{"Spaces", "${A B}", 1, "cannot expand"},
		{"InDefault", "${A:-${}}", 1, "cannot expand"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Expand(tt.in, env(nil))
			if err == nil {
				t.Fatal("Expand succeeded, want an error")
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("err=%q (%T), want a *Error", err, err)
			}
			if got, want := e.Line, tt.line; got != want {
				t.Errorf("Line=%d, want %d (err=%q)", got, want, err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err=%q, want it to contain %q", err, tt.want)
			}
		})
	}
}
