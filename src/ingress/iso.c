/* ISO code lists for the customer ingress (include/csurelay/ingress.h): the assigned ISO 3166-1
 * alpha-3 country codes and the active ISO 4217 currency codes, compiled in and looked up by binary
 * search (so each table must stay sorted; test_customer walks all 17,576 three-letter codes and
 * counts the hits, which catches an unsorted or incomplete table).
 *
 * Countries: the 249 officially assigned alpha-3 codes of ISO 3166-1 (unchanged since SSD in 2011).
 * User-assigned codes (XKX for Kosovo, the AAA-AAZ, QMA-QZZ, XAA-XZZ, ZZA-ZZZ ranges) and
 * withdrawn ones (ANT, SCG, YUG...) are not in it.
 *
 * Currencies: ISO 4217 list A.1 (the active table, SIX list one published 2026-01-01), including
 * its X codes: precious metals (XAU, XAG, XPD, XPT), bond-market and drawing units (XBA-XBD, XDR,
 * XSU, XUA, XAD), the testing code XTS and XXX (no currency). A merchant has no reason to send XTS
 * or XXX, but the rule is "in list A.1", and Commerce decides what it will book. Changes since the
 * 2023 list: ZWG replaced ZWL (2024), XCG replaced ANG (2025), CUC and SLL left, XAD was added
 * (2025), and BGN left when Bulgaria took the euro (2026-01-01); HRK had left in 2023.
 * Cross-checked against Debian iso-codes 4.15's iso_4217.json (181 codes) with those changes: 178
 * codes.
 */
#include "csurelay/ingress.h"

#include <stdlib.h>
#include <string.h>

#define ISO_CODE_COUNT(t) (sizeof(t) / sizeof((t)[0]))

static const char COUNTRIES[][4] = {
    "ABW", "AFG", "AGO", "AIA", "ALA", "ALB", "AND", "ARE", "ARG", "ARM", "ASM", "ATA", "ATF",
    "ATG", "AUS", "AUT", "AZE", "BDI", "BEL", "BEN", "BES", "BFA", "BGD", "BGR", "BHR", "BHS",
    "BIH", "BLM", "BLR", "BLZ", "BMU", "BOL", "BRA", "BRB", "BRN", "BTN", "BVT", "BWA", "CAF",
    "CAN", "CCK", "CHE", "CHL", "CHN", "CIV", "CMR", "COD", "COG", "COK", "COL", "COM", "CPV",
    "CRI", "CUB", "CUW", "CXR", "CYM", "CYP", "CZE", "DEU", "DJI", "DMA", "DNK", "DOM", "DZA",
    "ECU", "EGY", "ERI", "ESH", "ESP", "EST", "ETH", "FIN", "FJI", "FLK", "FRA", "FRO", "FSM",
    "GAB", "GBR", "GEO", "GGY", "GHA", "GIB", "GIN", "GLP", "GMB", "GNB", "GNQ", "GRC", "GRD",
    "GRL", "GTM", "GUF", "GUM", "GUY", "HKG", "HMD", "HND", "HRV", "HTI", "HUN", "IDN", "IMN",
    "IND", "IOT", "IRL", "IRN", "IRQ", "ISL", "ISR", "ITA", "JAM", "JEY", "JOR", "JPN", "KAZ",
    "KEN", "KGZ", "KHM", "KIR", "KNA", "KOR", "KWT", "LAO", "LBN", "LBR", "LBY", "LCA", "LIE",
    "LKA", "LSO", "LTU", "LUX", "LVA", "MAC", "MAF", "MAR", "MCO", "MDA", "MDG", "MDV", "MEX",
    "MHL", "MKD", "MLI", "MLT", "MMR", "MNE", "MNG", "MNP", "MOZ", "MRT", "MSR", "MTQ", "MUS",
    "MWI", "MYS", "MYT", "NAM", "NCL", "NER", "NFK", "NGA", "NIC", "NIU", "NLD", "NOR", "NPL",
    "NRU", "NZL", "OMN", "PAK", "PAN", "PCN", "PER", "PHL", "PLW", "PNG", "POL", "PRI", "PRK",
    "PRT", "PRY", "PSE", "PYF", "QAT", "REU", "ROU", "RUS", "RWA", "SAU", "SDN", "SEN", "SGP",
    "SGS", "SHN", "SJM", "SLB", "SLE", "SLV", "SMR", "SOM", "SPM", "SRB", "SSD", "STP", "SUR",
    "SVK", "SVN", "SWE", "SWZ", "SXM", "SYC", "SYR", "TCA", "TCD", "TGO", "THA", "TJK", "TKL",
    "TKM", "TLS", "TON", "TTO", "TUN", "TUR", "TUV", "TWN", "TZA", "UGA", "UKR", "UMI", "URY",
    "USA", "UZB", "VAT", "VCT", "VEN", "VGB", "VIR", "VNM", "VUT", "WLF", "WSM", "YEM", "ZAF",
    "ZMB", "ZWE",
};
_Static_assert(ISO_CODE_COUNT(COUNTRIES) == 249, "ISO 3166-1 assigns 249 alpha-3 codes");

static const char CURRENCIES[][4] = {
    "AED", "AFN", "ALL", "AMD", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT", "BHD",
    "BIF", "BMD", "BND", "BOB", "BOV", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD", "CDF",
    "CHE", "CHF", "CHW", "CLF", "CLP", "CNY", "COP", "COU", "CRC", "CUP", "CVE", "CZK", "DJF",
    "DKK", "DOP", "DZD", "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP", "GEL", "GHS", "GIP",
    "GMD", "GNF", "GTQ", "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR", "IQD", "IRR",
    "ISK", "JMD", "JOD", "JPY", "KES", "KGS", "KHR", "KMF", "KPW", "KRW", "KWD", "KYD", "KZT",
    "LAK", "LBP", "LKR", "LRD", "LSL", "LYD", "MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP",
    "MRU", "MUR", "MVR", "MWK", "MXN", "MXV", "MYR", "MZN", "NAD", "NGN", "NIO", "NOK", "NPR",
    "NZD", "OMR", "PAB", "PEN", "PGK", "PHP", "PKR", "PLN", "PYG", "QAR", "RON", "RSD", "RUB",
    "RWF", "SAR", "SBD", "SCR", "SDG", "SEK", "SGD", "SHP", "SLE", "SOS", "SRD", "SSP", "STN",
    "SVC", "SYP", "SZL", "THB", "TJS", "TMT", "TND", "TOP", "TRY", "TTD", "TWD", "TZS", "UAH",
    "UGX", "USD", "USN", "UYI", "UYU", "UYW", "UZS", "VED", "VES", "VND", "VUV", "WST", "XAD",
    "XAF", "XAG", "XAU", "XBA", "XBB", "XBC", "XBD", "XCD", "XCG", "XDR", "XOF", "XPD", "XPF",
    "XPT", "XSU", "XTS", "XUA", "XXX", "YER", "ZAR", "ZMW", "ZWG",
};
_Static_assert(ISO_CODE_COUNT(CURRENCIES) == 178, "ISO 4217 list A.1 holds 178 codes");

static int compare_code(const void *key, const void *entry) {
  return strcmp(key, entry);
}

/* Exactly three bytes, then a binary search of the sorted table. */
static bool in_table(const char *code, const char (*table)[4], size_t n) {
  if (code == NULL || strlen(code) != 3)
    return false;
  return bsearch(code, table, n, sizeof(table[0]), compare_code) != NULL;
}

bool cs_iso_country(const char *code) {
  return in_table(code, COUNTRIES, ISO_CODE_COUNT(COUNTRIES));
}

bool cs_iso_currency(const char *code) {
  return in_table(code, CURRENCIES, ISO_CODE_COUNT(CURRENCIES));
}
