#!/usr/bin/env python3
"""Generate the JSON fixtures for bench/json_bench (issue 2).

Writes, deterministically (fixed seed, no wall clock):
  bench/data/search_page.json  one CommerceEventsController/Search page: 250 CommerceEventEntity rows
  bench/data/sales_order.json  one SalesOrders/GetSalesOrderDetailsByTransactionId response, full size

Shapes follow /work/shared/reference/commerce-event-sample.md 1.1-1.4 and dynamics-api.md 2.4:
compact OData JSON as Retail Server sends it, DateTimeOffset with the fraction's trailing zeros
trimmed, EventData as a JSON *string* holding JSON text, money as high-scale decimals written
as raw number text (184.2200000000000000), empty nested arrays present.

Usage: python3 bench/gen_json_fixtures.py [OUT_DIR]   (default: bench/data next to this script)
"""

import datetime as dt
import json
import os
import random
import sys

SEED = 20240724


class Num(str):
    """Number written verbatim (decimal text with its scale), never through float."""


def enc(v):
    if isinstance(v, Num):
        return str(v)
    if v is None or isinstance(v, (bool, int, str)):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, float):
        raise TypeError("use money()/Num for non-integers")
    if isinstance(v, list):
        return "[" + ",".join(enc(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ",".join(json.dumps(k) + ":" + enc(x) for k, x in v.items()) + "}"
    raise TypeError(type(v))


def money(cents, scale=16):
    """Commerce decimal: 18422 -> 184.2200000000000000 (scale 16) or ...00000 (17)."""
    sign = "-" if cents < 0 else ""
    cents = abs(cents)
    return Num(f"{sign}{cents // 100}.{cents % 100:02d}" + "0" * (scale - 2))


def dec(value_text, scale=16):
    """Decimal with a given scale from a short decimal text: dec('6.25') -> 6.2500000000000000."""
    whole, _, frac = value_text.partition(".")
    return Num(whole + "." + frac.ljust(scale, "0"))


def odt(t):
    """DateTimeOffset in UTC, trailing zeros of the fraction trimmed: 2024-07-24T14:17:02.16Z."""
    s = t.strftime("%Y-%m-%dT%H:%M:%S")
    frac = f"{t.microsecond:06d}"[:3].rstrip("0")  # SQL datetime: millisecond-ish precision
    return s + ("." + frac if frac else "") + "Z"


# ---------------------------------------------------------------------------------------------
# Search page
# ---------------------------------------------------------------------------------------------

STORES = [  # (store, channel RecordId, number of POS terminals)
    ("HOUSTON", 5637144592, 24),
    ("SANFRAN", 5637145326, 12),
    ("SEATTLE", 5637145359, 16),
]
ONLINE_CHANNEL = 5637146082  # e-commerce channel: no terminal, no staff, opaque cart ids
ITEMS = ["81143", "0002", "81120", "91004", "0140", "81330", "92110", "0035", "93010", "82001",
         "81161", "0128", "91045", "0005", "92032"]


def search_page(rng, n_events=250):
    """Carts open across an hour on three stores and the web channel; their events interleave.

    Each cart: 1-5 AddCartLines, then (75 %) a Checkout, all with EventTransactionId = CartId.
    ~20 % of the rows are guests (EventCustomerId ""). The page is the first 250 rows by time,
    so carts can be cut at the page boundary exactly as Search paging cuts them.
    """
    window = dt.datetime(2024, 7, 24, 14, 0, 0, tzinfo=dt.timezone.utc)
    events = []
    while len(events) < 2 * n_events:
        start = window + dt.timedelta(milliseconds=rng.randint(0, 3_600_000))
        online = rng.random() < 0.2
        if online:
            channel, terminal, staff = ONLINE_CHANNEL, "", ""
            cart = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
                           for _ in range(32))
        else:
            store, channel, nterm = rng.choice(STORES)
            terminal = f"{store}-{rng.randint(1, nterm)}"
            staff = f"{rng.choice([168, 172, 181, 204, 160, 219]):06d}"
            cart = f"{store}-{terminal}-{int(start.timestamp() * 1000)}"  # CartId: store-terminal-ms
        guest = rng.random() < 0.25
        customer = "" if guest else str(rng.choice([1001, 1002, 2001, 2002, 2003, 2004, 2006]) +
                                        rng.randint(0, 40) * 1000)
        n_adds = rng.randint(1, 5)
        t = start
        for i in range(n_adds + 1):
            t += dt.timedelta(milliseconds=rng.randint(300, 45_000))
            checkout = i == n_adds
            if checkout and rng.random() < 0.25:
                break  # abandoned cart: AddCartLines without a Checkout
            if checkout:
                etype, edata = "Checkout", "{}"
            else:
                etype = "AddCartLines"
                edata = json.dumps(rng.sample(ITEMS, rng.randint(1, 4)), separators=(",", ":"))
            events.append((t, {
                "EventTransactionId": cart,
                "EventDateTime": odt(t),
                "EventType": etype,
                "EventDataAreaId": "usrt",
                "EventData": edata,
                "EventChannelId": channel,
                "EventTerminalId": terminal,
                "EventStaffId": staff,
                "EventCustomerId": customer,
                "ExtensionProperties": [],
            }))
    events.sort(key=lambda te: te[0])  # the view orders by EVENTDATETIME (not the trimmed text)
    return {
        "@odata.context": "https://contoso-prod.commerce.dynamics.com/Commerce/$metadata#CommerceEventsController",
        "@odata.count": 0,  # observed: 0 even though value is not empty
        "value": [e for _, e in events[:n_events]],
    }


# ---------------------------------------------------------------------------------------------
# Sales order
# ---------------------------------------------------------------------------------------------

PRODUCTS = [  # ItemId, ProductId, description, price cents, unit
    ("81143", 22565430173, "Brown Leather Sneakers", 12999, "ea"),
    ("0002", 22565421964, "Rainbow Crew Socks", 3999, "Ea"),
    ("81120", 22565430105, "Café Ölçü Espresso Cup – Set of 2", 2450, "ea"),
    ("91004", 22565431877, "Adventure Works Day Pack 25 L", 8900, "ea"),
    ("0140", 22565421702, "Fabrikam Trail Runner, Grey/Orange", 11450, "ea"),
    ("81330", 22565430622, "Polarized Aviator Sunglasses", 6500, "ea"),
    ("92110", 22565432044, "Merino Beanie", 2199, "ea"),
    ("0035", 22565421419, "Gift Wrap", 499, "ea"),
]
TAX_PCT = 625  # 6.25 %


def tax_line(line_no, base, tax, txn):
    return {
        "TaxGroup": "HOU", "Percentage": dec("6.25"), "IsExempt": False, "TaxBasis": money(base),
        "IsIncludedInPrice": False, "SaleLineNumber": Num(f"{line_no}.000000000000"),
        "StoreId": "HOUSTON", "TerminalId": "HOUSTON-2", "TransactionId": txn, "TaxCode": "TX_HOU",
        "Amount": money(tax), "AmountRefunded": money(0), "ExtensionProperties": [],
    }


def sales_line(rng, line_no, prod, qty, txn, created):
    item, product_id, desc, price, unit = prod
    gross = price * qty
    disc = (gross * 10 // 100) if rng.random() < 0.3 else 0
    net = gross - disc
    tax = (net * TAX_PCT + 5000) // 10000
    total = net + tax
    return {
        "LineId": str(line_no), "Description": desc, "ProductId": product_id, "Barcode": "",
        "OriginalPrice": money(price), "TotalAmount": money(total, 17),
        "NetAmountWithoutTax": money(net), "DiscountAmount": money(disc),
        "DiscountAmountWithoutTax": money(disc), "NetPrice": money(price), "LineDiscount": money(disc),
        "PeriodicDiscount": money(0), "ShippingAddress": None, "DeliveryMode": "", "Comment": "",
        "RequestedDeliveryDate": None, "InventoryLocationId": "HOUSTON",
        "InventoryStatusId": "Available", "InventoryDimensionId": f"{4600 + line_no * 89:06d}",
        "LineNumber": Num(f"{line_no}.000000000000"), "StatusValue": 0, "SalesStatusValue": 0,
        "IsVoided": False, "Quantity": Num(f"{qty}.00000000000000000"),
        "QuantityOrdered": Num(f"{qty}.0000000000000000"), "Price": money(price), "ItemId": item,
        "Amount": money(gross), "NetAmount": money(net, 17), "NetAmountWithNoTax": money(net),
        "TaxAmount": money(tax), "TaxAmountExclusive": money(tax), "TaxAmountInclusive": money(0),
        "ItemTaxGroupId": "ALL", "SalesTaxGroupId": "HOU", "UnitOfMeasureSymbol": unit,
        "SalesDate": created,
        "DiscountLines": ([{
            "SaleLineNumber": Num(f"{line_no}.000000000000"), "OfferId": "ST100005",
            "OfferName": "10% off footwear", "Amount": money(disc), "EffectiveAmount": money(disc),
            "Percentage": dec("10"), "DiscountLineTypeValue": 2, "PeriodicDiscountTypeValue": 0,
            "DiscountApplicationGroup": "", "ConcurrencyModeValue": 0, "IsCompoundable": False,
            "ExtensionProperties": [],
        }] if disc else []),
        "TaxLines": [tax_line(line_no, net, tax, txn)],
        "ChargeLines": [], "ReasonCodeLines": [], "ExtensionProperties": [],
    }, gross, disc, net, tax, total


def sales_order(rng):
    txn = "HOUSTON-HOUSTON-2-1715763728847"
    created = "2024-05-15T09:02:08.847Z"
    lines, sums = [], [0, 0, 0, 0, 0]
    n_lines = 8
    for i in range(n_lines):
        qty = rng.choice([1, 1, 1, 2, 3])
        line, *amounts = sales_line(rng, i + 1, PRODUCTS[i % len(PRODUCTS)], qty, txn, created)
        lines.append(line)
        sums = [a + b for a, b in zip(sums, amounts)]
    gross, disc, net, tax, total = sums
    charge = 340
    total += charge
    tenders = [(1, "1", total - 10000), (2, "3", 10000)]  # cash + card
    address = {
        "Name": "Karen Berg", "Id": "", "FullAddress": "1200 McKinney St\nHouston, TX 77010\nUSA",
        "RecordId": 5637145951, "Street": "1200 McKinney St", "StreetNumber": "", "County": "HARRIS",
        "CountyName": "Harris", "City": "Houston", "DistrictName": "", "State": "TX",
        "StateName": "Texas", "ZipCode": "77010", "ThreeLetterISORegionName": "USA",
        "Phone": "412 555 0144", "PhoneRecordId": 0, "PhoneExt": "", "Email": "karen.berg@contoso.example",
        "EmailContent": "", "EmailRecordId": 0, "Url": "", "UrlRecordId": 0, "TwoLetterISORegionName": "US",
        "Deactivate": False, "AttentionTo": "", "BuildingCompliment": "", "Postbox": "",
        "TaxGroup": "HOU", "AddressTypeValue": 2, "IsPrimary": True, "IsPrivate": False,
        "PartyNumber": "000001532", "IsAsyncAddress": False, "DirectoryPartyTableRecordId": 5637147000,
        "DirectoryPartyLocationRecordId": 5637148911, "LogisticsLocationRecordId": 5637151001,
        "LogisticsLocationId": "000002789", "LogisticsLocationExtRecordId": 0,
        "ExtensionProperties": [],
    }
    order = {
        "@odata.context": "https://contoso-prod.commerce.dynamics.com/Commerce/$metadata#Microsoft.Dynamics.Commerce.Runtime.DataModel.SalesOrder",
        "DocumentStatusValue": 0, "RecordId": 5637361829, "StatusValue": 4, "McrOrderStopped": False,
        "Shipments": [], "PaymentStatusValue": 0, "DetailedOrderStatusValue": 0, "IsDiscountFullyCalculated": True,
        "AmountDue": 0, "AmountPaid": money(total), "AttributeValues": [],
        "BeginDateTime": "2024-05-15T08:58:41.013Z",
        "CreatedDateTime": created, "BusinessDate": "2024-05-15T00:00:00+02:00",
        "ChannelId": 5637144592,
        "ChannelReferenceId": "", "ChargeAmount": money(charge), "ChargeLines": [{
            "ChargeLineId": "1", "ChargeCode": "RESTOCK", "CurrencyCode": "USD", "ModuleTypeValue": 1,
            "IsHeaderChargeLine": True, "ChargeTypeValue": 0, "ChargeMethodValue": 0,
            "CalculatedAmount": money(charge), "Value": money(charge), "Description": "Bag fee",
            "TransactionId": txn, "MarkupAutoLineRecordId": 0, "MarkupAutoTableRecId": 0,
            "SaleLineNumber": Num("0.000000000000"), "FromAmount": money(0), "ToAmount": money(0),
            "Keep": 0, "AmountRefunded": money(0), "TaxLines": [], "ReasonCodeLines": [],
            "TaxAmount": money(0), "TaxAmountInclusive": money(0), "TaxAmountExclusive": money(0),
            "NetAmount": money(charge), "NetAmountPerUnit": money(charge), "GrossAmount": money(charge),
            "ExtensionProperties": [],
        }],
        "Comment": "",
        "Coupons": [], "CurrencyCode": "USD",
        "CustomerAccountDepositLines": [], "CustomerId": "2006", "CustomerOrderModeValue": 0,
        "CustomerOrderTypeValue": 0, "DeliveryMode": "", "DeliveryModeChargeAmount": None,
        "DiscountAmount": money(disc), "DiscountAmountWithoutTax": money(disc), "NetPrice": money(0),
        "DiscountCodes": [], "EntryStatusValue": 0, "GrossAmount": money(total, 17),
        "HasLoyaltyPayment": False, "Id": txn, "SuspendedTransactionId": "",
        "IncomeExpenseLines": [], "InventoryLocationId": "HOUSTON",
        "IsCreatedOffline": False, "IsReturnByReceipt": False, "IsSuspended": False,
        "IsTaxIncludedInPrice": False, "LineDiscount": money(disc), "LineDiscountCalculationTypeValue": 0,
        "LoyaltyCardId": "52000113", "LoyaltyDiscountAmount": money(0),
        "LoyaltyRewardPointLines": [{
            "TransactionId": txn, "SaleLineNumber": Num("0.000000000000"), "CustomerAccount": "2006",
            "CardNumber": "52000113", "EntryTypeValue": 1, "ExpirationDate": "2025-05-15T00:00:00Z",
            "LoyaltyGroupRecordId": 5637144576, "LoyaltyProgramId": "CRM LP",
            "LoyaltyTierRecordId": 5637144577, "RewardPointRecordId": 5637144578,
            "RewardPointAmountQuantity": money(total // 100 * 100), "RewardPointId": "CRM RP",
            "RewardPointIsRedeemable": True, "RewardPointType": 1, "RewardPointCurrency": "",
            "ExtensionProperties": [],
        }],
        "ModifiedDateTime": "1900-01-01T00:00:00Z", "Name": "Karen Berg",
        "NetAmount": money(net + charge), "NetAmountWithoutTax": money(net + charge),
        "NetAmountWithNoTax": money(net + charge), "NetAmountWithTax": money(total),
        "NumberOfItems": Num(f"{sum(int(str(l['Quantity']).split('.')[0]) for l in lines)}.0000000000000000"),
        "OverriddenDepositAmount": None, "PeriodicDiscountAmount": money(0), "TenderDiscountAmount": money(0),
        "PrepaymentAmountInvoiced": money(0),
        "PrepaymentAmountPaid": money(0), "QuotationExpiryDate": None, "ReasonCodeLines": [], "ReceiptEmail": "karen.berg@contoso.example",
        "ReceiptId": "STONON-2100001", "RequestedDeliveryDate": None, "RequiredDepositAmount": money(0),
        "ReturnTransactionHasLoyaltyPayment": False,
        "SalesId": "012511", "SalesPaymentDifference": money(0), "SalesLines": lines,
        "ShiftId": 1027, "ShiftTerminalId": "HOUSTON-2", "ShippingAddress": address, "StaffId": "000168",
        "StatementCode": "", "StoreId": "HOUSTON", "SubtotalAmount": money(net, 17),
        "SubtotalAmountWithoutTax": money(net), "NetAmountWithTaxAndCharges": money(total),
        "SubtotalSalesAmount": money(net), "TaxAmount": money(tax), "TaxAmountExclusive": money(tax),
        "TaxAmountInclusive": money(0), "TaxLines": [], "TaxOverrideCode": None,
        "TenderLines": [{
            "TenderLineId": str(i), "Amount": money(amt), "AmountInTenderedCurrency": money(amt),
            "AmountInCompanyCurrency": money(amt), "Currency": "USD", "ExchangeRate": dec("1"),
            "CompanyCurrencyExchangeRate": dec("1"), "TenderTypeId": tt, "SignatureData": "",
            "ReasonCodeLines": [], "LineNumber": Num(f"{i}.000000000000"), "GiftCardId": "",
            "GiftCardPin": "", "GiftCardExpirationYear": 0, "GiftCardExpirationMonth": 0,
            "CreditMemoId": "", "CustomerId": "", "LoyaltyCardId": "", "CardTypeId": "" if tt == "1" else "VISA",
            "IsChangeLine": False, "IsHistorical": False, "IsVoidable": True, "StatusValue": 1,
            "VoidStatusValue": 0, "AuthorizedAmount": money(amt if tt == "3" else 0),
            "PaymentRefRecId": 0, "CardPaymentAccountId": "", "ProcessingTypeValue": 0,
            "CardProcessorStatusValue": 0, "CardToken": "", "Authorization": "",
            "MaskedCardNumber": "" if tt == "1" else "************4242", "TenderDate": created,
            "IsPolicyBypassed": False, "IsPreProcessed": tt == "3", "IsDeposit": False,
            "IsCustomerAccountFloorLimitUsed": False, "AuthorizationReferenceId": "",
            "IncomeAccountTypeValue": -1, "CashBackAmount": money(0), "ExtensionProperties": [],
        } for i, tt, amt in tenders],
        "RefundableTenderLines": [], "TerminalId": "HOUSTON-2", "TotalAmount": money(total),
        "TotalSalesAmount": money(net), "TotalReturnAmount": money(0),
        "TotalDiscount": money(0), "TotalManualDiscountAmount": money(0),
        "TotalManualDiscountPercentage": money(0), "TransactionTypeValue": 2,
        "TaxCalculationTypeValue": 0, "SalesInvoiceAmount": money(0), "GiftCardActiveFrom": None,
        "GiftCardBalance": None, "GiftCardExpireDate": None, "GiftCardHistoryDetails": None,
        "GiftCardIssueAmount": None, "FromPos": True,
        "IsGiftCardOperation": None, "CommissionSalesGroup": "", "IsCommissionSalesGroupOverriddenByCustomer": False,
        "HasTaxCalculationTriggered": False,
        "HasTotalDiscountCalculationTriggered": False, "CustomerName": "Karen Berg",
        "ContactInformationCollection": [
            {"Value": "412 555 0144", "ContactInformationTypeValue": 1, "IsPrimary": True,
             "ExtensionProperties": []},
            {"Value": "karen.berg@contoso.example", "ContactInformationTypeValue": 2, "IsPrimary": True,
             "ExtensionProperties": []},
        ],
        "InternalTransactionId": "2cf6659a-a87e-4603-b4a9-4438ccb27fad", "LanguageId": "en-us",
        "ReceiptTransactionTypeValue": 0, "ShippingAddressNotes": None, "FulfillmentStoreId": "",
        "OrderPlacedDate": created, "IsSales": True, "Notes": [], "FiscalTransactions": [],
        "CustomerRequisition": "", "CustomerAccountNumber": "2006", "TransactionDateTimeOffset": created,
        "ChannelTimeZoneId": "Central Standard Time", "BeginDateTimeUtc": "2024-05-15T08:58:41.013Z",
        "CashierName": "Jeff Hay", "TerminalOperatingUnitNumber": "128", "OperatingUnitNumber": "128",
        "TransactionSourceValue": 1, "ReceiptDateTime": "2024-05-15T04:02:08.847-05:00",
        "OrderLevelDiscountAmount": money(0),
        "ExtensionProperties": [],
    }
    return order


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "data")
    os.makedirs(out, exist_ok=True)
    rng = random.Random(SEED)
    page = search_page(rng)
    order = sales_order(rng)
    for name, doc in (("search_page.json", page), ("sales_order.json", order)):
        text = enc(doc)
        json.loads(text)  # must be valid JSON
        with open(os.path.join(out, name), "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
    ev = page["value"]
    print(f"search_page.json: {len(enc(page).encode())} bytes, {len(ev)} events, "
          f"{sum(e['EventType'] == 'Checkout' for e in ev)} Checkout, "
          f"{sum(e['EventCustomerId'] == '' for e in ev)} guest, "
          f"{len({e['EventTransactionId'] for e in ev})} carts")
    print(f"sales_order.json: {len(enc(order).encode())} bytes, {len(order)} top-level properties, "
          f"{len(order['SalesLines'])} SalesLines x {len(order['SalesLines'][0])} properties, "
          f"AmountPaid {order['AmountPaid']}")


if __name__ == "__main__":
    main()
