from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class PricingData(_message.Message):
    __slots__ = ("id", "price", "time", "currency", "exchange", "quote_type", "market_hours", "change_percent", "day_volume", "day_high", "day_low", "change", "short_name", "expire_date", "open_price", "previous_close", "strike_price", "underlying_symbol", "open_interest", "options_type", "mini_option", "last_size", "bid", "bid_size", "ask", "ask_size", "price_hint", "vol_24hr", "vol_all_currencies", "from_currency", "last_market", "circulating_supply", "market_cap")
    ID_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    EXCHANGE_FIELD_NUMBER: _ClassVar[int]
    QUOTE_TYPE_FIELD_NUMBER: _ClassVar[int]
    MARKET_HOURS_FIELD_NUMBER: _ClassVar[int]
    CHANGE_PERCENT_FIELD_NUMBER: _ClassVar[int]
    DAY_VOLUME_FIELD_NUMBER: _ClassVar[int]
    DAY_HIGH_FIELD_NUMBER: _ClassVar[int]
    DAY_LOW_FIELD_NUMBER: _ClassVar[int]
    CHANGE_FIELD_NUMBER: _ClassVar[int]
    SHORT_NAME_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_DATE_FIELD_NUMBER: _ClassVar[int]
    OPEN_PRICE_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_CLOSE_FIELD_NUMBER: _ClassVar[int]
    STRIKE_PRICE_FIELD_NUMBER: _ClassVar[int]
    UNDERLYING_SYMBOL_FIELD_NUMBER: _ClassVar[int]
    OPEN_INTEREST_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_TYPE_FIELD_NUMBER: _ClassVar[int]
    MINI_OPTION_FIELD_NUMBER: _ClassVar[int]
    LAST_SIZE_FIELD_NUMBER: _ClassVar[int]
    BID_FIELD_NUMBER: _ClassVar[int]
    BID_SIZE_FIELD_NUMBER: _ClassVar[int]
    ASK_FIELD_NUMBER: _ClassVar[int]
    ASK_SIZE_FIELD_NUMBER: _ClassVar[int]
    PRICE_HINT_FIELD_NUMBER: _ClassVar[int]
    VOL_24HR_FIELD_NUMBER: _ClassVar[int]
    VOL_ALL_CURRENCIES_FIELD_NUMBER: _ClassVar[int]
    FROM_CURRENCY_FIELD_NUMBER: _ClassVar[int]
    LAST_MARKET_FIELD_NUMBER: _ClassVar[int]
    CIRCULATING_SUPPLY_FIELD_NUMBER: _ClassVar[int]
    MARKET_CAP_FIELD_NUMBER: _ClassVar[int]
    id: str
    price: float
    time: int
    currency: str
    exchange: str
    quote_type: int
    market_hours: int
    change_percent: float
    day_volume: int
    day_high: float
    day_low: float
    change: float
    short_name: str
    expire_date: int
    open_price: float
    previous_close: float
    strike_price: float
    underlying_symbol: str
    open_interest: int
    options_type: int
    mini_option: int
    last_size: int
    bid: float
    bid_size: int
    ask: float
    ask_size: int
    price_hint: int
    vol_24hr: int
    vol_all_currencies: int
    from_currency: str
    last_market: str
    circulating_supply: float
    market_cap: float
    def __init__(self, id: _Optional[str] = ..., price: _Optional[float] = ..., time: _Optional[int] = ..., currency: _Optional[str] = ..., exchange: _Optional[str] = ..., quote_type: _Optional[int] = ..., market_hours: _Optional[int] = ..., change_percent: _Optional[float] = ..., day_volume: _Optional[int] = ..., day_high: _Optional[float] = ..., day_low: _Optional[float] = ..., change: _Optional[float] = ..., short_name: _Optional[str] = ..., expire_date: _Optional[int] = ..., open_price: _Optional[float] = ..., previous_close: _Optional[float] = ..., strike_price: _Optional[float] = ..., underlying_symbol: _Optional[str] = ..., open_interest: _Optional[int] = ..., options_type: _Optional[int] = ..., mini_option: _Optional[int] = ..., last_size: _Optional[int] = ..., bid: _Optional[float] = ..., bid_size: _Optional[int] = ..., ask: _Optional[float] = ..., ask_size: _Optional[int] = ..., price_hint: _Optional[int] = ..., vol_24hr: _Optional[int] = ..., vol_all_currencies: _Optional[int] = ..., from_currency: _Optional[str] = ..., last_market: _Optional[str] = ..., circulating_supply: _Optional[float] = ..., market_cap: _Optional[float] = ...) -> None: ...
