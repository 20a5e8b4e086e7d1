// Package mda is the Multipath Detection Algorithm.
package mda
